"""ClipDataset label rules: the fixed 0.70 ratio against the GLI lower limit of normal."""

from __future__ import annotations

import numpy as np
import pytest

from cohort.dataset import ClipDataset, lln_label
from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_format import SubjectInfo

# GLI global (Bowerman 2023) FEV1/FVC lower limits of normal from pyspiro 1.0.0:
# male 70 years 175 cm 0.6369, female 25 years 165 cm 0.7630, male 45 years 180 cm 0.6941.
SUBJECTS = {
    # Older man, ratio 0.66: abnormal by 0.70, normal by LLN 0.637.
    "OLD": SubjectInfo(age=70, sex="M", height_cm=175, fev1_fvc=0.66, pef=7.0),
    # Young woman, ratio 0.74: normal by 0.70, abnormal by LLN 0.763.
    "YOUNG": SubjectInfo(age=25, sex="F", height_cm=165, fev1=2.96, fvc=4.0, pef=6.0),
    # Ratio 0.60 is below both limits.
    "BOTH": SubjectInfo(age=45, sex="M", height_cm=180, fev1_fvc=0.60, pef=5.0),
}


def _add(store: CohortStore, subject_id: str, info: SubjectInfo, clips: int = 2, fev1_fvc: float | None = None) -> None:
    store.add_subject(subject_id, info)
    frames = np.full((12, 6, 6), 30.0, dtype=np.float32)
    recording = Recording(frames, 8.7, "thermal", subject_id)
    cycles = [Cycle(2 * index, 2 * index + 2) for index in range(clips)]
    targets = {"pef": 5.0, "fev1_fvc": fev1_fvc} if fev1_fvc is not None else None
    store.add_recording(subject_id, "thermal", recording, cycles, np.full((clips, 3, 4, 4), 30.0, dtype=np.float32),
                        clip_targets=targets)


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "cohort.h5"
    with CohortStore.create(path) as store:
        for subject_id, info in SUBJECTS.items():
            # YOUNG stores FEV1 and FVC but no ratio, so its clip targets are given.
            _add(store, subject_id, info, fev1_fvc=0.74 if subject_id == "YOUNG" else None)
    return path


def test_lln_label_values():
    assert lln_label("OLD", SUBJECTS["OLD"]) == 0
    assert lln_label("YOUNG", SUBJECTS["YOUNG"]) == 1
    assert lln_label("BOTH", SUBJECTS["BOTH"]) == 1


def test_dataset_lln_against_fixed_ratio(store_path):
    fixed = ClipDataset(store_path, label="fixed_ratio")
    lln = ClipDataset(store_path, label="lln")
    assert fixed.clip_subject_ids() == ["BOTH", "BOTH", "OLD", "OLD", "YOUNG", "YOUNG"]
    assert fixed.clip_labels().tolist() == [1, 1, 1, 1, 0, 0]
    assert lln.clip_labels().tolist() == [1, 1, 0, 0, 1, 1]
    assert [int(lln[index][2]) for index in range(len(lln))] == [1, 1, 0, 0, 1, 1]
    assert lln.clip_targets()["fev1_fvc"].tolist() == pytest.approx([0.60, 0.60, 0.66, 0.66, 0.74, 0.74])


def test_gli_2012_equations_accepted(store_path):
    labels = ClipDataset(store_path, label="lln", equations="gli_2012").clip_labels()
    assert labels.shape == (6,)
    assert set(labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="equations = 'nhanes' is invalid"):
        ClipDataset(store_path, label="lln", equations="nhanes")


def test_lln_without_measured_ratio(tmp_path):
    path = tmp_path / "cohort.h5"
    with CohortStore.create(path) as store:
        _add(store, "NORATIO", SubjectInfo(age=50, sex="F", height_cm=160), fev1_fvc=0.8)
    assert ClipDataset(path, label="fixed_ratio").clip_labels().tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"cohort.h5: subject 'NORATIO' has no measured FEV1/FVC"):
        ClipDataset(path, label="lln")


def test_lln_rejects_child(tmp_path):
    with pytest.raises(ValueError, match=r"subject 'CHILD' cannot get reference values: SubjectMetadata.age = 12"):
        lln_label("CHILD", SubjectInfo(age=12, sex="F", height_cm=150, fev1_fvc=0.8))
