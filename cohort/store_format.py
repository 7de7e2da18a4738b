"""Format constants, subject metadata and guarded reading for the cohort store.

The layout itself is documented in ``cohort.store``.  Every read from a store file goes
through ``read_group``, ``read_dataset`` or ``read_attr``, which check links, storage and
declared sizes before any data are read, because a store may come from anywhere.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np

from cohort.recording import Cycle, Recording

logger = logging.getLogger(__name__)

FORMAT_NAME = "pulmofusion-cohort"
FORMAT_VERSION = 1
# gzip level 1 + shuffle; cohort.store's docstring gives the measurements behind the choice.
STORAGE = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
CYCLE_DTYPE = np.dtype([("start", "<i8"), ("end", "<i8"), ("quality", "<f8")])
CLIP_FIELDS = ("clip_cycle", "clip_pef", "clip_fev1_fvc", "clip_label")
FIXED_RATIO = 0.70
SMOKING_STATUS = ("never", "former", "current", "unknown")
SEXES = ("F", "M")

# Limits against hostile files.  60 s of 640 x 512 float32 thermal frames at 60 Hz is
# 4.7 GB, so 16 GiB per dataset leaves room for real data and still rejects a header
# that declares terabytes.
MAX_DATASET_BYTES = 16 << 30
MAX_CHUNK_BYTES = 64 << 20
MAX_ATTRIBUTE_BYTES = 64 << 10
RECORDING_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class StoreError(ValueError):
    """A file that is not a readable cohort store; the message names the file and the fix."""


def encode_text(text: str) -> np.bytes_:
    """Encode ``text`` as fixed-length UTF-8 bytes, the only string type the store uses."""
    return np.bytes_(text.encode("utf-8"))


def _describe(obj: h5py.HLObject, path: Path) -> str:
    return f"{obj.name} in {path}"


def read_attr(obj: h5py.HLObject, name: str, path: Path, *, kind: str) -> object:
    """Read scalar attribute ``name`` of dtype kind ``kind`` ('S', 'i' or 'f') after checking its size."""
    if name not in obj.attrs:
        raise StoreError(f"{_describe(obj, path)} lacks attribute {name!r}; the store is damaged, rebuild it")
    attribute = h5py.h5a.open(obj.id, name.encode())
    dtype = attribute.dtype
    size = int(np.prod(attribute.shape, dtype=np.int64)) * dtype.itemsize if attribute.shape else dtype.itemsize
    if h5py.check_string_dtype(dtype) is not None and h5py.check_string_dtype(dtype).length is None:
        raise StoreError(f"attribute {name!r} of {_describe(obj, path)} is a variable-length string; not a cohort store")
    if attribute.shape not in ((), None) or size > MAX_ATTRIBUTE_BYTES:
        raise StoreError(f"attribute {name!r} of {_describe(obj, path)} has shape {attribute.shape}; expected a scalar")
    allowed = {"S": "S", "i": "iu", "f": "fiu"}[kind]
    if dtype.kind not in allowed:
        raise StoreError(f"attribute {name!r} of {_describe(obj, path)} has dtype {dtype}; expected kind {kind!r}")
    value = obj.attrs[name]
    if kind == "S":
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as error:
            raise StoreError(f"attribute {name!r} of {_describe(obj, path)} is not UTF-8 text") from error
    return int(value) if kind == "i" else float(value)


def read_text(obj: h5py.HLObject, name: str, path: Path) -> str:
    return str(read_attr(obj, name, path, kind="S"))


def _hard_member(parent: h5py.Group, name: str, path: Path) -> h5py.HLObject:
    link = parent.get(name, getlink=True)
    if link is None:
        raise StoreError(f"{_describe(parent, path)} lacks {name!r}; the store is damaged, rebuild it with ingest")
    if not isinstance(link, h5py.HardLink):
        raise StoreError(f"{parent.name}/{name} in {path} is a {type(link).__name__}; cohort stores contain only hard links")
    return parent[name]


def read_group(parent: h5py.Group, name: str, path: Path) -> h5py.Group:
    member = _hard_member(parent, name, path)
    if not isinstance(member, h5py.Group):
        raise StoreError(f"{member.name} in {path} is not a group; the store is damaged, rebuild it")
    return member


def read_dataset(
    parent: h5py.Group, name: str, path: Path, *, ndim: int, compound: np.dtype | None = None
) -> h5py.Dataset:
    """Return dataset ``name`` after checking storage, dtype, rank and declared sizes."""
    dataset = _hard_member(parent, name, path)
    where = _describe(dataset, path)
    if not isinstance(dataset, h5py.Dataset):
        raise StoreError(f"{where} is not a dataset; the store is damaged, rebuild it")
    if dataset.is_virtual:
        raise StoreError(f"{where} is a virtual dataset; cohort stores keep all data inside the file")
    if dataset.id.get_create_plist().get_external_count() > 0:
        raise StoreError(f"{where} stores its data in external files; cohort stores keep all data inside the file")
    dtype = dataset.dtype
    if compound is not None:
        if dtype != compound:
            raise StoreError(f"{where} has dtype {dtype}; expected {compound}")
    elif dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise StoreError(f"{where} has dtype {dtype}; expected a numeric dtype")
    if dataset.ndim != ndim:
        raise StoreError(f"{where} has shape {dataset.shape}; expected {ndim} dimensions")
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * dtype.itemsize
    if declared > MAX_DATASET_BYTES:
        raise StoreError(f"{where} declares {declared / 2**30:.1f} GiB, above the {MAX_DATASET_BYTES >> 30} GiB limit")
    if dataset.chunks is not None:
        chunk = int(np.prod(dataset.chunks, dtype=np.float64)) * dtype.itemsize
        if chunk > MAX_CHUNK_BYTES:
            raise StoreError(f"{where} declares {chunk >> 20} MiB chunks, above the {MAX_CHUNK_BYTES >> 20} MiB limit")
    return dataset


def check_recording_name(name: object) -> str:
    text = name.strip() if isinstance(name, str) else ""
    if not RECORDING_NAME_PATTERN.fullmatch(text):
        raise ValueError(
            f"recording name {name!r} is invalid; use 1-128 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return text


# (lower, upper, required) for each numeric field of SubjectInfo.  NaN marks an optional
# value that was not recorded.  Bounds are plausibility limits for adults (estimates).
_NUMERIC_RANGES = {
    "age": (5.0, 110.0, True),
    "height_cm": (80.0, 250.0, True),
    "weight_kg": (15.0, 400.0, False),
    "pack_years": (0.0, 300.0, False),
    "fev1": (0.05, 10.0, False),
    "fvc": (0.05, 12.0, False),
    "fev1_fvc": (0.05, 1.0, False),
    "pef": (0.1, 25.0, False),
}


@dataclass(frozen=True)
class SubjectInfo:
    """Metadata of one subject: age (years), sex, height (cm), weight (kg), smoking status,
    pack-years, measured FEV1 (L), FVC (L), FEV1/FVC, PEF (L/s) and label.

    ``label`` is 1 for obstructed, 0 for normal and -1 for unknown.  It may come from a
    clinician or the lower limit of normal, so it is not derived from ``fev1_fvc`` here.
    """

    age: float
    sex: str
    height_cm: float
    weight_kg: float = math.nan
    smoking: str = "unknown"
    pack_years: float = math.nan
    fev1: float = math.nan
    fvc: float = math.nan
    fev1_fvc: float = math.nan
    pef: float = math.nan
    label: int = -1

    def __post_init__(self) -> None:
        for name, (lower, upper, required) in _NUMERIC_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
                raise ValueError(f"SubjectInfo.{name} = {value!r} is invalid; it must be a number")
            if math.isnan(value) and not required:
                continue
            if not lower <= value <= upper:
                extra = "" if required else " or NaN if not recorded"
                raise ValueError(f"SubjectInfo.{name} = {value!r} is invalid; it must be in [{lower}, {upper}]{extra}")
            object.__setattr__(self, name, float(value))
        if self.sex not in SEXES:
            raise ValueError(f"SubjectInfo.sex = {self.sex!r} is invalid; it must be one of {SEXES}")
        if self.smoking not in SMOKING_STATUS:
            raise ValueError(f"SubjectInfo.smoking = {self.smoking!r} is invalid; it must be one of {SMOKING_STATUS}")
        if isinstance(self.label, bool) or self.label not in (-1, 0, 1):
            raise ValueError(f"SubjectInfo.label = {self.label!r} is invalid; it must be -1 (unknown), 0 or 1")
        object.__setattr__(self, "label", int(self.label))

    @classmethod
    def from_values(cls, values: Mapping[str, object] | object) -> SubjectInfo:
        """Build from a mapping or from an object with attributes of the same names.

        ``height`` and ``weight`` are accepted for ``height_cm`` and ``weight_kg``, and
        None for a value not recorded, so a ``cohort.metadata.SubjectMetadata`` converts
        directly.  A mapping may carry ``subject_id`` and ``ethnicity``, which are ignored.
        Any other unknown key raises ValueError, so a misspelt field is not dropped.
        """
        names = [field.name for field in fields(cls)]
        aliases = {"height": "height_cm", "weight": "weight_kg"}
        if isinstance(values, Mapping):
            unknown = sorted(set(values) - set(names) - set(aliases) - {"subject_id", "ethnicity"})
            if unknown:
                raise ValueError(f"unknown subject metadata fields {unknown}; known fields are {names}")
            found = {aliases.get(key, key): value for key, value in values.items() if aliases.get(key, key) in names}
        else:
            found = {}
            for name in [*names, *aliases]:
                if hasattr(values, name):
                    found[aliases.get(name, name)] = getattr(values, name)
        return cls(**{name: math.nan if value is None else value for name, value in found.items()})

    def write(self, group: h5py.Group) -> None:
        for name, value in asdict(self).items():
            group.attrs[name] = encode_text(value) if isinstance(value, str) else value

    @classmethod
    def read(cls, group: h5py.Group, path: Path) -> SubjectInfo:
        values: dict[str, object] = {}
        kinds = {"sex": "S", "smoking": "S", "label": "i"}
        for field in fields(cls):
            values[field.name] = read_attr(group, field.name, path, kind=kinds.get(field.name, "f"))
        try:
            return cls(**values)
        except ValueError as error:
            raise StoreError(f"subject metadata {group.name} in {path} is invalid: {error}") from error


def _per_clip(value: object, count: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(count, float(array))
    if array.shape != (count,):
        raise ValueError(f"clip target {name!r} has shape {array.shape}; expected a scalar or ({count},)")
    return array


def prepare_recording(
    recording: Recording,
    cycles: Sequence[Cycle],
    clips: np.ndarray,
    info: SubjectInfo,
    clip_cycle: Sequence[int] | None,
    clip_targets: Mapping[str, object] | None,
    clip_label: Sequence[int] | None,
) -> dict[str, np.ndarray]:
    """Validate one recording's data and return the arrays ``CohortStore`` writes."""
    thermal = recording.modality == "thermal"
    frames = recording.frames.astype(np.float32, copy=False) if thermal else recording.frames
    if not thermal and frames.dtype != np.uint8:
        raise ValueError(f"RGB frames have dtype {frames.dtype}; expected uint8")
    if thermal and not np.isfinite(frames).all():
        raise ValueError("thermal frames contain NaN or infinite values; fix or drop those frames first")

    for cycle in cycles:
        if not isinstance(cycle, Cycle) or cycle.end > recording.n_frames or not 0.0 <= cycle.quality <= 1.0:
            raise ValueError(f"cycle {cycle!r} is invalid for a recording of {recording.n_frames} frames")
    table = np.array([(c.start, c.end, c.quality) for c in cycles], dtype=CYCLE_DTYPE)

    clips = np.asarray(clips)
    expected_ndim = 4 if thermal else 5
    if clips.ndim != expected_ndim or (not thermal and clips.shape[-1] != 3):
        layout = "(N, T, H, W)" if thermal else "(N, T, H, W, 3)"
        raise ValueError(f"{recording.modality} clips must be shaped {layout}, got {clips.shape}")
    clips = clips.astype(np.float32, copy=False) if thermal else clips
    if not thermal and clips.dtype != np.uint8:
        raise ValueError(f"RGB clips have dtype {clips.dtype}; expected uint8")
    if thermal and not np.isfinite(clips).all():
        raise ValueError("thermal clips contain NaN or infinite values")
    count = len(clips)

    if clip_cycle is None:
        if count != len(cycles):
            raise ValueError(f"{count} clips for {len(cycles)} cycles; pass clip_cycle to map each clip to its cycle")
        clip_cycle = np.arange(count)
    clip_cycle = np.asarray(clip_cycle, dtype=np.int64)
    if clip_cycle.shape != (count,) or (count and (clip_cycle.min() < 0 or clip_cycle.max() >= len(cycles))):
        raise ValueError(f"clip_cycle must hold {count} cycle rows in [0, {len(cycles)}), got {clip_cycle.tolist()}")
    if len(np.unique(clip_cycle)) != count:
        raise ValueError(f"clip_cycle {clip_cycle.tolist()} uses a cycle twice; each clip comes from its own cycle")

    targets = dict(clip_targets or {})
    unknown = sorted(set(targets) - {"pef", "fev1_fvc"})
    if unknown:
        raise ValueError(f"unknown clip targets {unknown}; known targets are 'pef' and 'fev1_fvc'")
    pef = _per_clip(targets.get("pef", info.pef), count, "pef")
    fev1_fvc = _per_clip(targets.get("fev1_fvc", info.fev1_fvc), count, "fev1_fvc")
    for name, values, (lower, upper, _) in (("pef", pef, _NUMERIC_RANGES["pef"]), ("fev1_fvc", fev1_fvc, _NUMERIC_RANGES["fev1_fvc"])):
        if not (np.isfinite(values) & (values >= lower) & (values <= upper)).all():
            raise ValueError(
                f"clip target {name!r} = {values.tolist()} is invalid; each must be in [{lower}, {upper}] "
                "(give clip_targets, or the subject's measured value)"
            )

    if clip_label is None:
        clip_label = np.full(count, info.label) if info.label >= 0 else (fev1_fvc < FIXED_RATIO)
    clip_label = np.asarray(clip_label).astype(np.int8)
    if clip_label.shape != (count,) or not np.isin(clip_label, (0, 1)).all():
        raise ValueError(f"clip_label must hold {count} values of 0 or 1, got {clip_label.tolist()}")

    return {
        "frames": frames,
        "cycles": table,
        "clips": clips,
        "clip_cycle": clip_cycle,
        "clip_pef": pef.astype(np.float32),
        "clip_fev1_fvc": fev1_fvc.astype(np.float32),
        "clip_label": clip_label,
    }
