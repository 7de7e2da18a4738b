"""One HDF5 file per cohort: subjects' metadata, recordings, breathing cycles and clips.

Layout (format version 1)::

    /                                   attrs: format = "pulmofusion-cohort", format_version = 1
    /subjects/<id>/metadata             group, attrs: age, sex, height_cm, weight_kg, smoking,
                                        pack_years, fev1, fvc, fev1_fvc, pef, label (SubjectInfo)
    /subjects/<id>/recordings/<name>/   attrs: fps, modality, source, notes (JSON list), complete
        frames       thermal float32 (F, H, W) degC, or RGB uint8 (F, H, W, 3)
        cycles       compound (start int64, end int64, quality float64), one row per Cycle
        clips        float32 (N, T, H, W) or uint8 (N, T, H, W, 3), one chunk per clip
        clip_cycle   int64 (N,), the row of ``cycles`` each clip was cut from
        clip_pef     float32 (N,), PEF target in L/s
        clip_fev1_fvc float32 (N,), FEV1/FVC target
        clip_label   int8 (N,), 1 = obstructed, 0 = normal

``<id>`` is the subject id normalised by ``cohort.folds.normalize_subject_id``.  Strings
are fixed-length UTF-8 bytes, so their size is declared up front and no reader has to
trust a variable-length length field.

Compression: gzip level 1 with the byte-shuffle filter on frames and clips.  On 30-frame
224 x 224 float32 thermal clips from ``cohort.synthetic`` (seed 2, 24 clips, 2-core VM,
h5py 3.16, HDF5 2.0) it stored 3.53 MB per clip (6.02 MB raw).  Writing ran at 72 MB/s
and reading through ``ClipDataset`` at 510 MB/s, both in one process.  lzf+shuffle stored 3.9 MB per
clip and gzip 4+shuffle 3.45 MB at a slower write.  gzip is chosen over lzf because every
HDF5 build (HDFView, MATLAB, netCDF, h5py) reads it, while lzf needs h5py's own filter.

Writing is atomic.  A writable store is a copy of the file in the same folder, and
``commit`` renames it over the original, so a reader sees the old or the new file and
never a mix.  An exception before commit discards the copy.  A lock file
``.<name>.lock`` keeps two writers from overwriting each other's work.  The cost is
one file copy per commit.

Files are treated as untrusted: nothing is unpickled, links other than hard links,
external or virtual storage, variable-length strings and datasets or chunks with absurd
declared sizes are rejected before their data are read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from cohort.folds import normalize_subject_id
from cohort.recording import MODALITIES, Cycle, Recording
from cohort.store_format import (
    CLIP_FIELDS,
    CYCLE_DTYPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    STORAGE,
    StoreError,
    SubjectInfo,
    check_recording_name,
    encode_text,
    read_attr,
    read_dataset,
    read_group,
    read_text,
)

logger = logging.getLogger(__name__)

_FRAME_CHUNK_BYTES = 1 << 20


def open_store_file(path: Path, mode: str) -> h5py.File:
    """Open ``path`` with h5py and check that it is a cohort store this code can read."""
    if not path.is_file():
        raise FileNotFoundError(f"cohort store {path} not found; build one with python -m cohort ingest")
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path} is not an HDF5 file; pass a cohort store built by python -m cohort ingest")
    try:
        handle = h5py.File(path, mode)
    except OSError as error:
        raise StoreError(
            f"{path} could not be opened as HDF5 ({error}); it is truncated or damaged, "
            "so restore it from a backup or rebuild it with cohort.store_ingest.ingest"
        ) from error
    try:
        if "format" not in handle.attrs:
            raise StoreError(f"{path} is HDF5 but not a cohort store (it has no 'format' attribute); pass a store "
                             "built by python -m cohort ingest")
        name = read_attr(handle, "format", path, kind="S")
        if name != FORMAT_NAME:
            raise StoreError(f"{path} is HDF5 but not a cohort store (format {name!r}, expected {FORMAT_NAME!r})")
        version = read_attr(handle, "format_version", path, kind="i")
        if version > FORMAT_VERSION:
            raise StoreError(
                f"{path} has format version {version}, newer than {FORMAT_VERSION} which this PulmoFusion "
                "reads; upgrade PulmoFusion to read it"
            )
        if version < 1:
            raise StoreError(f"{path} has format version {version}, which is invalid; rebuild the store")
        read_group(handle, "subjects", path)
    except BaseException:
        handle.close()
        raise
    return handle


class _Lock:
    """Exclusive lock file ``.<store>.lock`` next to the store, holding the writer's pid."""

    def __init__(self, store_path: Path) -> None:
        self.path = store_path.with_name(f".{store_path.name}.lock")
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._remove_if_stale():
                    raise StoreError(
                        f"{store_path} is being written by another process (lock file {self.path}); "
                        "wait for it, or delete the lock file if no writer is running"
                    ) from None
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(str(os.getpid()))
            return
        raise StoreError(f"could not take the lock file {self.path} for {store_path}; another writer keeps taking it")

    def _remove_if_stale(self) -> bool:
        try:
            pid = int(self.path.read_text().strip() or "0")
        except (OSError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.warning("removing stale lock %s of process %d, which no longer runs", self.path, pid)
            self._remove_stale_copies()
            self.path.unlink(missing_ok=True)
            return True
        except PermissionError:
            return False
        return False

    def _remove_stale_copies(self) -> None:
        """Delete the working copies a killed writer left; only the lock holder makes them."""
        store_name = self.path.name[1:-len(".lock")]
        for copy in self.path.parent.glob(f".{store_name}.*.tmp"):
            logger.warning("removing %s, the working copy of a writer that no longer runs", copy)
            copy.unlink(missing_ok=True)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _temporary_path(path: Path) -> Path:
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


class CohortStore:
    """A cohort HDF5 store opened for reading (``"r"``) or atomic editing (``"a"``).

    Use as a context manager.  A writable store commits when the ``with`` block ends
    normally and discards every change when it raises.
    """

    def __init__(self, path: Path, handle: h5py.File, *, working: Path | None = None, lock: _Lock | None = None):
        self.path = path
        self._file = handle
        self._working = working
        self._lock = lock

    @classmethod
    def create(cls, path: str | os.PathLike, *, overwrite: bool = False) -> CohortStore:
        """Start a new, empty store at ``path`` and return it writable; ``commit`` publishes it."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path} already exists; open it with CohortStore.open(path, 'a') or pass overwrite=True")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} not found; create it before the store {path.name}")
        def start(working: Path) -> h5py.File:
            handle = h5py.File(working, "w")
            handle.attrs["format"] = encode_text(FORMAT_NAME)
            handle.attrs["format_version"] = np.int64(FORMAT_VERSION)
            handle.create_group("subjects")
            return handle

        return cls._writable(path, start)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> CohortStore:
        """Open an existing store: ``"r"`` reads, ``"a"`` edits a copy that ``commit`` publishes."""
        path = Path(path)
        if mode == "r":
            return cls(path, open_store_file(path, "r"))
        if mode != "a":
            raise ValueError(f"mode = {mode!r} is invalid; use 'r' to read or 'a' to add to the store")
        open_store_file(path, "r").close()

        def start(working: Path) -> h5py.File:
            shutil.copyfile(path, working)
            return open_store_file(working, "r+")

        return cls._writable(path, start)

    @classmethod
    def _writable(cls, path: Path, start) -> CohortStore:
        """Take the lock, make the working copy with ``start(working_path)`` and return the store.

        On any failure the working copy is deleted and the lock released.
        """
        lock = _Lock(path)
        working = None
        try:
            working = _temporary_path(path)
            handle = start(working)
        except BaseException:
            if working is not None:
                working.unlink(missing_ok=True)
            lock.release()
            raise
        return cls(path, handle, working=working, lock=lock)

    def __del__(self) -> None:
        # A writable store dropped without commit or discard would leave its copy and lock
        # file behind.  It is discarded, never committed, because its edits may be partial.
        if getattr(self, "_working", None) is not None:
            logger.warning("cohort store %s was not closed; discarding its uncommitted changes", self.path)
            self.discard()

    @property
    def writable(self) -> bool:
        return self._working is not None

    def __enter__(self) -> CohortStore:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def commit(self) -> None:
        """Rename the edited copy over the store and close it; the store then contains every change."""
        if self._working is None:
            raise StoreError(f"{self.path} is open read-only or already closed; open it with mode 'a' to edit")
        try:
            self._file.flush()
            self._file.close()
            with open(self._working, "rb+") as handle:
                os.fsync(handle.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._working, 0o666 & ~umask)
            os.replace(self._working, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except BaseException:
            self.discard()
            raise
        self._working = None
        self._lock.release()
        logger.info("committed cohort store %s", self.path)

    def discard(self) -> None:
        """Close without saving: the store file stays exactly as it was before opening."""
        if self._file.id.valid:
            self._file.close()
        if self._working is not None:
            self._working.unlink(missing_ok=True)
            self._working = None
            self._lock.release()

    def close(self) -> None:
        """Commit a writable store, or close a read-only one."""
        if self._working is not None:
            self.commit()
        elif self._file.id.valid:
            self._file.close()

    # Writing.

    def _require_writable(self) -> None:
        if self._working is None:
            raise StoreError(f"{self.path} is open read-only; open it with CohortStore.open(path, 'a') to add data")

    def add_subject(self, subject_id: object, info: SubjectInfo | Mapping[str, object] | object) -> str:
        """Add a subject's metadata and return its normalised id.

        Adding a subject that exists with the same metadata does nothing; different
        metadata raises ValueError, because recordings already stored refer to it.
        """
        self._require_writable()
        key = normalize_subject_id(subject_id)
        info = info if isinstance(info, SubjectInfo) else SubjectInfo.from_values(info)
        subjects = self._file["subjects"]
        if key in subjects:
            existing = self.read_subject(key)
            if existing != info:
                raise ValueError(f"subject {key!r} is already in {self.path} with other metadata: {existing}")
            return key
        group = subjects.create_group(key)
        info.write(group.create_group("metadata"))
        group.create_group("recordings")
        return key

    def _clip_shape(self, modality: str) -> tuple[int, ...] | None:
        """Return the per-clip shape of this store's clips of ``modality``, None before the first."""
        for subject in self._file["subjects"].values():
            for group in subject["recordings"].values():
                if "clips" in group and read_text(group, "modality", self.path) == modality:
                    return tuple(group["clips"].shape[1:])
        return None

    def add_recording(
        self,
        subject_id: object,
        name: str,
        recording: Recording,
        cycles: Sequence[Cycle],
        clips: np.ndarray,
        *,
        clip_cycle: Sequence[int] | None = None,
        clip_targets: Mapping[str, object] | None = None,
        clip_label: Sequence[int] | None = None,
    ) -> None:
        """Store one recording with its cycles and the clips cut from them.

        ``clips`` is ``(N, T, H, W)`` float32 degC (thermal) or ``(N, T, H, W, 3)`` uint8
        (RGB).  ``clip_cycle`` gives each clip's cycle row; by default clip i comes from
        cycle i, which needs N == len(cycles).  ``clip_targets`` maps ``"pef"`` (L/s) and
        ``"fev1_fvc"`` to a value or one value per clip and defaults to the subject's
        measured values.  ``clip_label`` defaults to the subject's label or, where that is
        unknown (-1), to the fixed-ratio rule FEV1/FVC < 0.70 on each clip's target.
        Everything is validated before anything is written.
        """
        from cohort.store_format import prepare_recording

        self._require_writable()
        key = normalize_subject_id(subject_id)
        name = check_recording_name(name)
        if key not in self._file["subjects"]:
            raise ValueError(f"subject {key!r} is not in {self.path}; add it with add_subject first")
        recordings = self._file["subjects"][key]["recordings"]
        if name in recordings:
            raise ValueError(f"recording {name!r} of subject {key!r} is already in {self.path}; choose another name")
        if normalize_subject_id(recording.subject_id) != key:
            raise ValueError(f"recording {name!r} belongs to subject {recording.subject_id!r}, not {key!r}")
        arrays = prepare_recording(recording, cycles, clips, self.read_subject(key), clip_cycle, clip_targets, clip_label)
        stored_shape = self._clip_shape(recording.modality)
        if stored_shape is not None and tuple(arrays["clips"].shape[1:]) != stored_shape:
            raise ValueError(
                f"clips of recording {name!r} have shape {tuple(arrays['clips'].shape[1:])} per clip, but the "
                f"{recording.modality} clips already in {self.path} have {stored_shape}; cut them with the same "
                "number of frames and size, or use another store"
            )

        group = recordings.create_group(name)
        try:
            self._write_recording(group, recording, arrays)
        except BaseException:
            del recordings[name]
            raise
        logger.debug("stored recording %s/%s with %d clips", key, name, len(arrays["clips"]))

    @staticmethod
    def _write_recording(group: h5py.Group, recording: Recording, arrays: dict[str, np.ndarray]) -> None:
        frames = arrays["frames"]
        frame_bytes = max(1, frames[0].nbytes)
        frames_per_chunk = max(1, min(len(frames), _FRAME_CHUNK_BYTES // frame_bytes))
        group.create_dataset("frames", data=frames, chunks=(frames_per_chunk, *frames.shape[1:]), **STORAGE)
        group.create_dataset("cycles", data=arrays["cycles"])
        clips = arrays["clips"]
        dataset = group.create_dataset(
            "clips", shape=clips.shape, dtype=clips.dtype, chunks=(1, *clips.shape[1:]),
            maxshape=(None, *clips.shape[1:]), **STORAGE,
        )
        for index, clip in enumerate(clips):
            dataset[index] = clip
        for field in CLIP_FIELDS:
            group.create_dataset(field, data=arrays[field])
        group.attrs["fps"] = np.float64(recording.fps)
        group.attrs["modality"] = encode_text(recording.modality)
        group.attrs["source"] = encode_text("" if recording.source is None else str(recording.source))
        group.attrs["notes"] = encode_text(json.dumps(list(recording.notes)))
        group.attrs["complete"] = np.int8(1)

    # Reading.

    def subject_ids(self) -> list[str]:
        return sorted(self._file["subjects"].keys())

    def _subject_group(self, subject_id: object) -> h5py.Group:
        key = normalize_subject_id(subject_id)
        subjects = read_group(self._file, "subjects", self.path)
        if key not in subjects:
            raise KeyError(f"subject {key!r} is not in {self.path}; it contains {len(subjects)} subjects")
        return read_group(subjects, key, self.path)

    def _recording_group(self, subject_id: object, name: str) -> h5py.Group:
        recordings = read_group(self._subject_group(subject_id), "recordings", self.path)
        if name not in recordings:
            raise KeyError(f"recording {name!r} of subject {subject_id!r} is not in {self.path}")
        group = read_group(recordings, name, self.path)
        if read_attr(group, "complete", self.path, kind="i") != 1:
            raise StoreError(f"recording {group.name} in {self.path} is incomplete; ingest it again")
        return group

    def recording_names(self, subject_id: object) -> list[str]:
        return sorted(read_group(self._subject_group(subject_id), "recordings", self.path).keys())

    def has_recording(self, subject_id: object, name: str) -> bool:
        """Return whether the recording is stored completely (ingestion uses it to skip work)."""
        try:
            self._recording_group(subject_id, name)
        except KeyError:
            return False
        return True

    def read_subject(self, subject_id: object) -> SubjectInfo:
        group = read_group(self._subject_group(subject_id), "metadata", self.path)
        return SubjectInfo.read(group, self.path)

    def recording_attrs(self, subject_id: object, name: str) -> dict[str, object]:
        """Return fps, modality, source, notes and the clip shape of a recording."""
        group = self._recording_group(subject_id, name)
        modality = read_text(group, "modality", self.path)
        if modality not in MODALITIES:
            raise StoreError(f"{group.name} in {self.path} has modality {modality!r}; expected one of {MODALITIES}")
        clips = read_dataset(group, "clips", self.path, ndim=4 if modality == "thermal" else 5)
        notes = json.loads(read_text(group, "notes", self.path))
        if not isinstance(notes, list):
            raise StoreError(f"{group.name} in {self.path} has notes that are not a JSON list; rebuild the store")
        return {
            "fps": float(read_attr(group, "fps", self.path, kind="f")),
            "modality": modality,
            "source": read_text(group, "source", self.path) or None,
            "notes": [str(note) for note in notes],
            "clip_shape": tuple(clips.shape),
        }

    def read_recording(self, subject_id: object, name: str) -> Recording:
        attrs = self.recording_attrs(subject_id, name)
        group = self._recording_group(subject_id, name)
        ndim = 3 if attrs["modality"] == "thermal" else 4
        frames = read_dataset(group, "frames", self.path, ndim=ndim)[()]
        source = Path(attrs["source"]) if attrs["source"] else None
        return Recording(frames, attrs["fps"], attrs["modality"], normalize_subject_id(subject_id), source, attrs["notes"])

    def read_cycles(self, subject_id: object, name: str) -> list[Cycle]:
        rows = read_dataset(self._recording_group(subject_id, name), "cycles", self.path, ndim=1, compound=CYCLE_DTYPE)[()]
        return [Cycle(int(row["start"]), int(row["end"]), float(row["quality"])) for row in rows]

    def read_clips(self, subject_id: object, name: str, index: int | slice | None = None) -> np.ndarray:
        group = self._recording_group(subject_id, name)
        ndim = 4 if read_text(group, "modality", self.path) == "thermal" else 5
        dataset = read_dataset(group, "clips", self.path, ndim=ndim)
        return dataset[()] if index is None else dataset[index]

    def read_clip_table(self, subject_id: object, name: str) -> dict[str, np.ndarray]:
        """Return the per-clip arrays ``clip_cycle``, ``clip_pef``, ``clip_fev1_fvc`` and ``clip_label``."""
        group = self._recording_group(subject_id, name)
        return {field: read_dataset(group, field, self.path, ndim=1)[()] for field in CLIP_FIELDS}
