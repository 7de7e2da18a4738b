"""PyTorch dataset over the clips of a cohort store.

Each item is ``(clip, features, label, targets)``:

- ``clip``: float32 tensor ``(C, T, H, W)``.  Thermal clips have C = 1 in degC, not
  normalised.  RGB clips have C = 3 in RGB order, scaled from uint8 to [0, 1].
- ``features``: float32 vector of subject metadata, ``subject_features`` by default.
  Measured spirometry is never part of it, because it is what the model predicts.
- ``label``: int64 scalar, 1 = obstructed, by the label rule chosen (see ``ClipDataset``).
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
from cohort.metadata import EQUATIONS, ReferenceValues, SubjectMetadata, reference_values
from cohort.store import CohortStore, open_store_file
from cohort.store_format import FIXED_RATIO, SubjectInfo, read_dataset

logger = logging.getLogger(__name__)

LABEL_RULES = ("fixed_ratio", "lln", "stored")
# reference_values reads sex, age, height and ethnicity, never weight, but SubjectMetadata
# requires a plausible weight; this fills it when the store has none.
_UNUSED_WEIGHT_KG = 70.0
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


def measured_ratio(subject_id: str, info: SubjectInfo) -> float:
    """Return the subject's measured FEV1/FVC: the stored ratio, else FEV1 / FVC.

    Raises ValueError naming the subject when neither is recorded.
    """
    if not np.isnan(info.fev1_fvc):
        return float(info.fev1_fvc)
    if not (np.isnan(info.fev1) or np.isnan(info.fvc)):
        return float(info.fev1 / info.fvc)
    raise ValueError(
        f"subject {subject_id!r} has no measured FEV1/FVC (fev1_fvc, or fev1 and fvc), so the 'lln' label rule "
        "cannot label it; add the measurement to the metadata or leave the subject out"
    )


def subject_reference_values(subject_id: str, info: SubjectInfo, equations: str = "gli_global") -> ReferenceValues:
    """Return the predicted values and lower limits of normal of a stored subject.

    The store keeps no ethnicity, so GLI-2012 uses its "Other/mixed" equations and
    Hankinson's PEF its Caucasian one.  Raises ValueError when the subject's age or height
    lies outside the adult limits of ``cohort.metadata.LIMITS`` (age 18-100 years, height
    120-220 cm).
    """
    try:
        subject = SubjectMetadata(
            subject_id=subject_id, age=info.age, sex=info.sex, height=info.height_cm,
            weight=_UNUSED_WEIGHT_KG, smoking="never",
        )
    except ValueError as error:
        raise ValueError(f"subject {subject_id!r} cannot get reference values: {error}") from error
    return reference_values(subject, equations)


def lln_label(subject_id: str, info: SubjectInfo, equations: str = "gli_global") -> int:
    """Return 1 when the subject's measured FEV1/FVC is below its lower limit of normal, else 0.

    The limit comes from ``cohort.metadata.reference_values`` with ``equations``
    (``"gli_global"`` or ``"gli_2012"``).  The store keeps no ethnicity, so GLI-2012
    uses its "Other/mixed" equations.  Raises ValueError when the subject has no measured
    FEV1/FVC, or when its age or height lies outside the adult limits of
    ``cohort.metadata.LIMITS`` (age 18-100 years, height 120-220 cm).
    """
    ratio = measured_ratio(subject_id, info)
    lower_limit = subject_reference_values(subject_id, info, equations).lln["fev1_fvc"]
    return int(ratio < lower_limit)


class ClipDataset(Dataset):
    """Clips of ``subjects`` (all subjects if None) recorded in ``modality``.

    ``label`` chooses the label rule:

    - ``"fixed_ratio"``: each clip's FEV1/FVC target < 0.70;
    - ``"lln"``: the subject's measured FEV1/FVC < its lower limit of normal from
      ``equations`` (see ``lln_label``), the same label for all of its clips;
    - ``"stored"``: the ``clip_label`` written at ingestion.

    ``features`` maps a subject's ``SubjectInfo`` to its metadata vector.  Subject ids
    are normalised, and an unknown id raises ValueError.
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        *,
        subjects: Sequence[str] | None = None,
        modality: str = "thermal",
        label: str = "fixed_ratio",
        features: Callable[[SubjectInfo], np.ndarray] = subject_features,
        equations: str = "gli_global",
    ) -> None:
        if label not in LABEL_RULES:
            raise ValueError(f"label = {label!r} is invalid; it must be one of {LABEL_RULES}")
        if modality not in ("thermal", "rgb"):
            raise ValueError(f"modality = {modality!r} is invalid; it must be 'thermal' or 'rgb'")
        if equations not in EQUATIONS:
            raise ValueError(f"equations = {equations!r} is invalid; it must be one of {EQUATIONS}")
        self.store_path = Path(store_path)
        self.modality = modality
        self.label_rule = label
        self.equations = equations

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
                info = store.read_subject(subject_id)
                subject_label = None
                if label == "lln":
                    try:
                        subject_label = lln_label(subject_id, info, equations)
                    except ValueError as error:
                        raise ValueError(f"{self.store_path}: {error}") from error
                vector = np.asarray(features(info), dtype=np.float32)
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
                    if label == "lln":
                        labels.append(np.full(count, subject_label, dtype=np.int64))
                    else:
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

    def clip_labels(self) -> np.ndarray:
        """Return the int64 label of every item, in item order, without reading any clip."""
        return self._labels.numpy().copy()

    def clip_targets(self) -> dict[str, np.ndarray]:
        """Return float32 ``{"pef": L/s, "fev1_fvc": ratio}`` of every item, in item order."""
        return {"pef": self._pef.numpy().copy(), "fev1_fvc": self._fev1_fvc.numpy().copy()}

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
