"""PyTorch dataset over the clips of a cohort store.

Each item is ``(clip, features, label, targets)``:

- ``clip``: float32 tensor ``(C, T, H, W)``.  Thermal clips have C = 1 in degC, not
  normalised.  RGB clips have C = 3 in RGB order, scaled from uint8 to [0, 1].
- ``features``: float32 vector of subject metadata, ``subject_features`` by default.
  Measured spirometry is never part of it, because it is what the model predicts.
- ``label``: int64 scalar, 1 = obstructed.
- ``targets``: ``{"pef": L/s, "fev1_fvc": ratio}`` as float32 scalars.

The HDF5 file is opened on first access in each process and never shared across a
fork, so the dataset works with ``DataLoader(num_workers > 0)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from cohort.folds import normalize_subject_id
from cohort.store import CohortStore, open_store_file
from cohort.store_format import FIXED_RATIO, SubjectInfo, read_dataset

logger = logging.getLogger(__name__)

LABEL_RULES = ("fixed_ratio", "stored")
FEATURE_NAMES = (
    "age_per_100_years",
    "male",
    "height_per_2_m",
    "weight_per_100_kg",
    "weight_missing",
    "pack_years_per_50",
    "smoking_never",
    "smoking_former",
    "smoking_current",
)


def subject_features(info: SubjectInfo) -> np.ndarray:
    """Return the default metadata vector, laid out as ``FEATURE_NAMES``.

    Values are divided by round constants so they sit near [0, 1]; a missing weight is
    0 with ``weight_missing`` = 1, a missing pack-years count is 0, and an unknown
    smoking status sets none of the three smoking flags.
    """
    weight_missing = np.isnan(info.weight_kg)
    return np.array(
        [
            info.age / 100.0,
            1.0 if info.sex == "M" else 0.0,
            info.height_cm / 200.0,
            0.0 if weight_missing else info.weight_kg / 100.0,
            1.0 if weight_missing else 0.0,
            0.0 if np.isnan(info.pack_years) else info.pack_years / 50.0,
            1.0 if info.smoking == "never" else 0.0,
            1.0 if info.smoking == "former" else 0.0,
            1.0 if info.smoking == "current" else 0.0,
        ],
        dtype=np.float32,
    )


class ClipDataset(Dataset):
    """Clips of ``subjects`` (all subjects if None) recorded in ``modality``.

    ``label`` chooses the label rule: ``"fixed_ratio"`` is each clip's FEV1/FVC target
    < 0.70, ``"stored"`` is the ``clip_label`` written at ingestion (for example from
    the lower limit of normal).  ``features`` maps a subject's ``SubjectInfo`` to its
    metadata vector.  Subject ids are normalised, and an unknown id raises ValueError.
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        *,
        subjects: Sequence[str] | None = None,
        modality: str = "thermal",
        label: str = "fixed_ratio",
        features: Callable[[SubjectInfo], np.ndarray] = subject_features,
    ) -> None:
        if label not in LABEL_RULES:
            raise ValueError(f"label = {label!r} is invalid; it must be one of {LABEL_RULES}")
        if modality not in ("thermal", "rgb"):
            raise ValueError(f"modality = {modality!r} is invalid; it must be 'thermal' or 'rgb'")
        self.store_path = Path(store_path)
        self.modality = modality
        self.label_rule = label

        self._clips: list[tuple[str, str, int]] = []
        labels: list[np.ndarray] = []
        pef: list[np.ndarray] = []
        fev1_fvc: list[np.ndarray] = []
        self._features: dict[str, torch.Tensor] = {}
        with CohortStore.open(self.store_path, "r") as store:
            stored = store.subject_ids()
            if subjects is None:
                chosen = stored
            else:
                chosen = sorted({normalize_subject_id(subject_id) for subject_id in subjects})
                unknown = sorted(set(chosen) - set(stored))
                if unknown:
                    raise ValueError(f"subjects {unknown[:10]} are not in {self.store_path}; check the ids or the store")
            for subject_id in chosen:
                vector = np.asarray(features(store.read_subject(subject_id)), dtype=np.float32)
                if vector.ndim != 1 or not np.isfinite(vector).all():
                    raise ValueError(f"features of subject {subject_id!r} must be a finite 1-D vector, got {vector}")
                self._features[subject_id] = torch.from_numpy(vector)
                for name in store.recording_names(subject_id):
                    if store.recording_attrs(subject_id, name)["modality"] != modality:
                        continue
                    table = store.read_clip_table(subject_id, name)
                    count = len(table["clip_label"])
                    self._clips.extend((subject_id, name, index) for index in range(count))
                    stored_label = table["clip_label"].astype(np.int64)
                    ratio_label = (table["clip_fev1_fvc"] < FIXED_RATIO).astype(np.int64)
                    labels.append(stored_label if label == "stored" else ratio_label)
                    pef.append(table["clip_pef"].astype(np.float32))
                    fev1_fvc.append(table["clip_fev1_fvc"].astype(np.float32))
        if not self._clips:
            raise ValueError(f"{self.store_path} has no {modality} clips for the {len(chosen)} subjects requested")
        self._labels = torch.from_numpy(np.concatenate(labels))
        self._pef = torch.from_numpy(np.concatenate(pef))
        self._fev1_fvc = torch.from_numpy(np.concatenate(fev1_fvc))
        self._handle: h5py.File | None = None
        self._handle_pid: int | None = None
        self._datasets: dict[tuple[str, str], h5py.Dataset] = {}
        logger.info("clip dataset of %s: %d %s clips from %d subjects", self.store_path, len(self), modality, len(chosen))

    @property
    def subject_ids(self) -> list[str]:
        return sorted(self._features)

    def clip_subject_ids(self) -> list[str]:
        """Return the subject id of every item, in item order."""
        return [subject_id for subject_id, _, _ in self._clips]

    def __len__(self) -> int:
        return len(self._clips)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.update(_handle=None, _handle_pid=None, _datasets={})
        return state

    def _clips_dataset(self, subject_id: str, name: str) -> h5py.Dataset:
        # A handle inherited through fork shares its file state with the parent, so every
        # process opens its own.
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = open_store_file(self.store_path, "r")
            self._handle_pid = os.getpid()
            self._datasets = {}
        key = (subject_id, name)
        if key not in self._datasets:
            group = self._handle["subjects"][subject_id]["recordings"][name]
            self._datasets[key] = read_dataset(group, "clips", self.store_path, ndim=4 if self.modality == "thermal" else 5)
        return self._datasets[key]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        subject_id, name, clip_index = self._clips[index]
        clip = self._clips_dataset(subject_id, name)[clip_index]
        if self.modality == "thermal":
            tensor = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)).unsqueeze(0)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2))).float().div_(255.0)
        targets = {"pef": self._pef[index], "fev1_fvc": self._fev1_fvc[index]}
        return tensor, self._features[subject_id], self._labels[index], targets

    def close(self) -> None:
        """Close this process's file handle; the next item opens it again."""
        if self._handle is not None and self._handle_pid == os.getpid():
            self._handle.close()
        self._handle = None
        self._datasets = {}
