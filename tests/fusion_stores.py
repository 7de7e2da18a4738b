"""A tiny thermal cohort store for the fusion tests: some subjects abnormal, clips with a learnable signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_format import SubjectInfo


def make_tiny_store(path: Path, *, subjects: int = 8, clips: int = 3, frames: int = 8, size: int = 32) -> Path:
    """Write ``subjects`` subjects (every fourth abnormal) with ``clips`` thermal clips each.

    Abnormal clips warm up slowly and normal ones quickly, and the warming scales with
    each subject's PEF, so a model can learn both the class and PEF.
    """
    rng = np.random.default_rng(0)
    with CohortStore.create(path) as store:
        for number in range(subjects):
            abnormal = number % 4 == 0
            ratio = 0.55 if abnormal else 0.80
            pef = 5.0 + rng.uniform(0.0, 4.0)
            subject_id = f"S{number:02d}"
            info = SubjectInfo(age=40.0 + number, sex="M" if number % 2 else "F", height_cm=170.0, weight_kg=70.0,
                               smoking="never", fev1=3.0, fvc=3.0 / ratio, fev1_fvc=ratio, pef=pef, label=int(abnormal))
            store.add_subject(subject_id, info)
            recording = Recording(np.full((frames * clips, size, size), 25.0, np.float32), 8.7, "thermal", subject_id)
            cycles = [Cycle(i * frames, (i + 1) * frames) for i in range(clips)]
            time = np.linspace(0.0, 1.0, frames)[:, None, None]
            level = 24.0 + (8.0 * pef / 9.0) * time ** (2.0 if abnormal else 0.5)
            values = level + rng.normal(0.0, 0.3, (clips, frames, size, size))
            store.add_recording(subject_id, "thermal", recording, cycles, values.astype(np.float32),
                                clip_targets={"pef": np.full(clips, pef), "fev1_fvc": np.full(clips, ratio)})
    return path
