"""On-disk cache of rendered simulated sessions: .npy arrays plus one JSON file per session.

Layout: ``<cache root>/cohort-v<FORMAT_VERSION>-<key>/session-<index>.{thermal,rgb,mask_rise}.npy``
and ``session-<index>.json``. ``key`` is the first 16 hex digits of the SHA-256 of the
simulation parameters and ``FORMAT_VERSION``, so changed parameters or a new format
never reuse old files. Every file is written to a temporary name and renamed into
place. The JSON file, which contains the SHA-256 of every array, is written last. A
session whose JSON is missing is generated; one whose files fail to parse or do not match
their checksums is regenerated with a logged warning.

Subjects and session timelines are not read from the cache: they are redrawn from the
parameters, which takes well under a second for a small cohort. Arrays are loaded with
``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cohort.files import atomic_write
from cohort.recording import Recording
from cohort.simulator import (
    SimulatedCohort,
    SimulatedSession,
    SimulationParameters,
    cohort_from_parameters,
    plan_cohort,
    render_session,
)

logger = logging.getLogger(__name__)

# NOTE: bump FORMAT_VERSION whenever the simulator's output changes for the same
# parameters. The cache only detects stale sessions whose cycles or subject ids differ.
FORMAT_VERSION = 1
CACHE_ENVIRONMENT_VARIABLE = "PULMOFUSION_CACHE"
_ARRAYS = ("thermal", "rgb", "mask_rise")


def default_cache_root() -> Path:
    """Return ``$PULMOFUSION_CACHE`` when set, else ``~/.cache/pulmofusion``."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(configured) if configured else Path.home() / ".cache" / "pulmofusion"


def cache_key(parameters: SimulationParameters) -> str:
    """Return the hex key of a cohort's cache folder."""
    text = json.dumps({"format": FORMAT_VERSION, "parameters": parameters.to_json()}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class CorruptCacheEntry(ValueError):
    """A cached session that cannot be parsed or does not match its checksums."""


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_atomically(path: Path, write) -> None:  # noqa: ANN001 - write(binary stream)
    def write_file(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            write(stream)

    atomic_write(path, write_file)


def _session_arrays(session: SimulatedSession) -> dict[str, np.ndarray]:
    arrays = {"mask_rise": session.mask_rise_k}
    if session.thermal is not None:
        arrays["thermal"] = session.thermal.frames
    if session.rgb is not None:
        arrays["rgb"] = session.rgb.frames
    return arrays


def write_session(folder: Path, index: int, session: SimulatedSession) -> None:
    """Write one session's arrays and then its JSON description into ``folder``."""
    description = {
        "format": FORMAT_VERSION,
        "subject_id": session.subject.subject_id,
        "cycles": [[cycle.start, cycle.end] for cycle in session.cycles],
        "spirometry": [
            {key: value for key, value in asdict(blow).items() if key != "curve"} | {"curve": asdict(blow.curve)}
            for blow in session.spirometry
        ],
        "notes": session.thermal.notes if session.thermal is not None else session.rgb.notes,
        "arrays": {},
    }
    for name, array in _session_arrays(session).items():
        path = folder / f"session-{index:04d}.{name}.npy"
        _write_atomically(path, lambda stream, array=array: np.save(stream, array, allow_pickle=False))
        description["arrays"][name] = {
            "shape": list(array.shape), "dtype": str(array.dtype), "sha256": _array_digest(array)
        }
    text = json.dumps(description, indent=1).encode("utf-8")
    _write_atomically(folder / f"session-{index:04d}.json", lambda stream: stream.write(text))


def read_session(folder: Path, index: int, fresh: SimulatedSession, fps: float) -> SimulatedSession:
    """Load one session; ``fresh`` supplies the subject, timeline and cycles redrawn from the parameters.

    ``fresh`` needs no frames (a session planned but not rendered is enough), only its
    truth. Raises ``CorruptCacheEntry`` naming the file and the problem.
    """
    json_path = folder / f"session-{index:04d}.json"
    try:
        description = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCacheEntry(f"{json_path}: cannot read the session description ({error})") from error
    if not isinstance(description, dict) or description.get("format") != FORMAT_VERSION:
        raise CorruptCacheEntry(f"{json_path}: format is not {FORMAT_VERSION}")
    cycles = [[cycle.start, cycle.end] for cycle in fresh.cycles]
    if description.get("cycles") != cycles or description.get("subject_id") != fresh.subject.subject_id:
        raise CorruptCacheEntry(f"{json_path}: subject or cycles differ from the ones the parameters give")

    loaded = {}
    for name, expected in dict(description.get("arrays", {})).items():
        path = folder / f"session-{index:04d}.{name}.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise CorruptCacheEntry(f"{path}: cannot load the array ({error})") from error
        if list(array.shape) != expected.get("shape") or str(array.dtype) != expected.get("dtype"):
            raise CorruptCacheEntry(f"{path}: shape {array.shape} {array.dtype} differs from the recorded one")
        if _array_digest(array) != expected.get("sha256"):
            raise CorruptCacheEntry(f"{path}: SHA-256 differs from the recorded one")
        loaded[name] = array
    if "mask_rise" not in loaded:
        raise CorruptCacheEntry(f"{json_path}: the mask_rise array is missing")

    notes = list(description.get("notes", []))
    subject_id = fresh.subject.subject_id

    def recording(modality: str) -> Recording | None:
        if modality not in loaded:
            return None
        return Recording(frames=loaded[modality], fps=fps, modality=modality, subject_id=subject_id,
                         source=folder / f"session-{index:04d}.{modality}.npy", notes=list(notes))

    return SimulatedSession(subject=fresh.subject, thermal=recording("thermal"), rgb=recording("rgb"),
                            cycles=fresh.cycles, spirometry=fresh.spirometry, timeline=fresh.timeline,
                            mask_rise_k=loaded["mask_rise"])


def _load_or_render(folder: Path, index: int, plans, parameters: SimulationParameters) -> SimulatedSession:  # noqa: ANN001
    json_path = folder / f"session-{index:04d}.json"
    if json_path.exists():
        truth = render_session(plans[index], index, parameters, frames=False)
        try:
            return read_session(folder, index, truth, parameters.fps)
        except CorruptCacheEntry as error:
            logger.warning("cache entry for session %d is corrupt, regenerating it: %s", index, error)
    session = render_session(plans[index], index, parameters)
    write_session(folder, index, session)
    logger.info("cached session %d of %s in %s", index, session.subject.subject_id, folder)
    return session


def default_cohort(
    cache_dir: str | Path | None = None,
    *,
    n_subjects: int = 12,
    seed: int = 0,
    parameters: SimulationParameters | None = None,
) -> SimulatedCohort:
    """Return the cached default cohort, rendering and caching any session not cached yet.

    ``parameters`` overrides ``n_subjects`` and ``seed`` when given. Every session is
    checked (and generated if missing or corrupt) before this returns; reading
    ``sessions[i]`` later loads it from the cache folder again.
    """
    if parameters is None:
        parameters = SimulationParameters(n_subjects=n_subjects, seed=seed)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    folder = root / f"cohort-v{FORMAT_VERSION}-{cache_key(parameters)}"
    folder.mkdir(parents=True, exist_ok=True)
    plans = plan_cohort(parameters)

    def loader(index: int) -> SimulatedSession:
        return _load_or_render(folder, index, plans, parameters)

    for index in range(parameters.n_subjects):
        loader(index)
    return cohort_from_parameters(parameters, loader=loader, plans=plans)
