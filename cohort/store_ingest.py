"""Resumable ingestion of recordings into a cohort store.

Items are committed in batches of ``commit_every``.  Each batch is one atomic edit of
the store (see ``cohort.store``), so an exception or a kill leaves the store as it was
after the last finished batch.  A later call with the same items skips every recording
already stored and processes only the rest.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cohort.folds import normalize_subject_id
from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_format import SubjectInfo, check_recording_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestItem:
    """One recording to ingest: its subject, its name in the store and a loader."""

    subject_id: str
    name: str
    load: Callable[[], Recording]

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject_id", normalize_subject_id(self.subject_id))
        object.__setattr__(self, "name", check_recording_name(self.name))
        if not callable(self.load):
            raise ValueError(f"IngestItem.load = {self.load!r} is invalid; it must be a callable returning a Recording")


@dataclass(frozen=True)
class Processed:
    """Result of ``process`` for one recording, with the fields of ``CohortStore.add_recording``."""

    cycles: Sequence[Cycle]
    clips: np.ndarray
    clip_cycle: Sequence[int] | None = None
    clip_targets: Mapping[str, object] | None = None
    clip_label: Sequence[int] | None = None


@dataclass(frozen=True)
class IngestReport:
    """Recordings (subject id, name) added by this call and those skipped as already stored."""

    added: tuple[tuple[str, str], ...]
    skipped: tuple[tuple[str, str], ...]


def _same_subject(stored: SubjectInfo, given: SubjectInfo) -> bool:
    """Compare two subjects field by field, treating NaN (not recorded) as equal to NaN."""
    for name in SubjectInfo.__dataclass_fields__:
        a, b = getattr(stored, name), getattr(given, name)
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            continue
        if a != b:
            return False
    return True


def _as_items(items: Iterable[IngestItem | tuple[str, str, Callable[[], Recording]]]) -> list[IngestItem]:
    result = []
    seen = set()
    for item in items:
        item = item if isinstance(item, IngestItem) else IngestItem(*item)
        key = (item.subject_id, item.name)
        if key in seen:
            raise ValueError(f"recording {item.name!r} of subject {item.subject_id!r} is listed twice; give each a unique name")
        seen.add(key)
        result.append(item)
    return result


def ingest(
    store_path: str | os.PathLike,
    items: Iterable[IngestItem | tuple[str, str, Callable[[], Recording]]],
    *,
    process: Callable[[Recording], Processed | tuple[Sequence[Cycle], np.ndarray]],
    subjects: Mapping[str, SubjectInfo | Mapping[str, object] | object] | None = None,
    commit_every: int = 8,
    progress: bool = True,
) -> IngestReport:
    """Load, process and store each item that is not in the store yet.

    ``items`` contains ``IngestItem`` objects or ``(subject_id, name, load)`` tuples.
    ``process`` turns a loaded recording into ``Processed`` or ``(cycles, clips)``.
    ``subjects`` maps subject ids to metadata for subjects not yet in the store.  It is
    checked before any loading, so a missing or conflicting subject fails before work.  The
    store is created if ``store_path`` does not exist.  Each commit copies the store
    file once, so a larger ``commit_every`` is faster but loses more work on failure.
    """
    if isinstance(commit_every, bool) or not isinstance(commit_every, int) or commit_every < 1:
        raise ValueError(f"commit_every = {commit_every!r} is invalid; it must be a positive integer")
    store_path = Path(store_path)
    items = _as_items(items)
    metadata = {normalize_subject_id(key): SubjectInfo.from_values(value) for key, value in (subjects or {}).items()}

    if not store_path.exists():
        CohortStore.create(store_path).commit()
    with CohortStore.open(store_path, "r") as store:
        stored_subjects = set(store.subject_ids())
        finished = {(item.subject_id, item.name) for item in items if item.subject_id in stored_subjects
                    and store.has_recording(item.subject_id, item.name)}
        for subject_id in sorted(stored_subjects & set(metadata)):
            if not _same_subject(store.read_subject(subject_id), metadata[subject_id]):
                raise ValueError(
                    f"subject {subject_id!r} is in {store_path} with metadata {store.read_subject(subject_id)}, "
                    f"which differs from the metadata passed in subjects; fix one of them"
                )

    missing = sorted({item.subject_id for item in items} - stored_subjects - set(metadata))
    if missing:
        raise ValueError(
            f"subjects {missing[:10]} are neither in {store_path} nor in subjects; pass their metadata as "
            "subjects={id: SubjectInfo(...)}"
        )
    pending = [item for item in items if (item.subject_id, item.name) not in finished]
    skipped = tuple(sorted(finished))
    logger.info("ingesting %d recordings into %s (%d already stored)", len(pending), store_path, len(skipped))

    added: list[tuple[str, str]] = []
    with tqdm(total=len(items), initial=len(skipped), desc="ingest", unit="recording", disable=not progress) as bar:
        for first in range(0, len(pending), commit_every):
            batch = pending[first:first + commit_every]
            batch_added = []
            with CohortStore.open(store_path, "a") as store:
                for item in batch:
                    try:
                        if item.subject_id not in stored_subjects:
                            store.add_subject(item.subject_id, metadata[item.subject_id])
                            stored_subjects.add(item.subject_id)
                        recording = item.load()
                        if not isinstance(recording, Recording):
                            raise TypeError(f"loader of {item.subject_id}/{item.name} returned {type(recording).__name__}, not a Recording")
                        result = process(recording)
                        result = result if isinstance(result, Processed) else Processed(*result)
                        store.add_recording(
                            item.subject_id, item.name, recording, result.cycles, result.clips,
                            clip_cycle=result.clip_cycle, clip_targets=result.clip_targets,
                            clip_label=result.clip_label,
                        )
                    except BaseException as error:
                        logger.info(
                            "ingest of %s/%s failed (%s: %s); discarding this batch of %d, %d committed before",
                            item.subject_id, item.name, type(error).__name__, error, len(batch), len(added),
                        )
                        raise
                    batch_added.append((item.subject_id, item.name))
                    bar.update(1)
            added.extend(batch_added)
    logger.info("ingest into %s finished: %d added, %d skipped", store_path, len(added), len(skipped))
    return IngestReport(added=tuple(added), skipped=skipped)
