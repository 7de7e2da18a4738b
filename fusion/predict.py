"""Prediction on a new recording with the ensemble of a run's fold models.

``predict_recording`` reads the recording (``cohort.readers.read_recording``) and finds
its breathing cycles (``cohort.segmentation.segment``).  It cuts clips of the shape the run
was trained on (``cut_clips``), builds the subject's metadata features from its row of the
metadata CSV, and runs every fold model of every trained branch.  The ensemble output of
a cycle is the mean over fold models of the SNN's abnormal probability and of the X3D's
(PEF, FEV1/FVC).  The patient result is the majority vote of the cycle classes and the
mean of the cycle regressions.  A subject that was in a fold's training set raises a
warning, because its prediction is then not held out.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from cohort.dataset import subject_features
from cohort.files import atomic_write
from cohort.folds import normalize_subject_id
from cohort.metadata import read_metadata
from cohort.readers import read_recording
from cohort.segmentation import cut_clips, segment
from cohort.store_format import FIXED_RATIO, SubjectInfo
from fusion.evaluate import load_fold, read_run_config, restore_model
from fusion.loop import CohortArrays, predict
from fusion.metrics import ensemble_mean, majority_vote, patient_means

logger = logging.getLogger(__name__)


def _clip_shape(run_dir: Path) -> tuple[int, ...]:
    path = run_dir / "folds.json"
    try:
        shape = json.loads(path.read_text())["clip_shape"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is missing or has no clip_shape ({error}); train the experiment again") from None
    return tuple(int(value) for value in shape)


def _subject_row(metadata_path: Path, subject_id: str) -> SubjectInfo:
    key = normalize_subject_id(subject_id)
    for row in read_metadata(metadata_path):
        if normalize_subject_id(row.subject_id) == key:
            return SubjectInfo.from_values(row)
    raise ValueError(f"{metadata_path} has no row for subject {key!r}; add it or pass the right --subject")


def predict_recording(run_dir: str | os.PathLike, recording_path: str | os.PathLike,
                      metadata_path: str | os.PathLike, subject_id: str, *, fps: float | None = None,
                      out_dir: str | os.PathLike | None = None) -> dict:
    """Predict every cycle of one recording and the patient; write and return ``predictions.json``."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    channels, n_frames, height, width = _clip_shape(run_dir)
    subject_key = normalize_subject_id(subject_id)
    info = _subject_row(Path(metadata_path), subject_key)

    named_subject, separator, _ = Path(recording_path).name.partition("_")
    if separator and normalize_subject_id(named_subject) != subject_key:
        warnings.warn(f"recording {recording_path} is named for subject {normalize_subject_id(named_subject)}, not "
                      f"{subject_key}; check that --subject names this recording's metadata row", stacklevel=2)
    recording = read_recording(recording_path, modality=config.data.modality, subject_id=subject_key, fps=fps)
    cycles = segment(recording).cycles
    if not cycles:
        raise ValueError(f"{recording_path}: no breathing cycle found; check the recording or segment it with "
                         "python -m cohort segment")
    clips = cut_clips(recording, list(cycles), n_frames=n_frames, size=height)
    if config.data.modality == "thermal":
        tensor = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)).unsqueeze(1)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(clips.transpose(0, 4, 1, 2, 3))).float().div_(255.0)
    count = len(tensor)
    features = torch.from_numpy(subject_features(info)).expand(count, -1).contiguous()
    arrays = CohortArrays(tensor, features, torch.zeros(count, dtype=torch.int64), torch.zeros(count, 2),
                          [subject_key] * count)
    index = np.arange(count)

    outputs: dict[str, list] = {branch: [] for branch in config.training.branches}
    seen_in_training = []
    for branch in config.training.branches:
        for fold in range(config.data.folds):
            state, path = load_fold(run_dir, config, branch, fold, cohort=None)
            if subject_key in state["train_ids"]:
                seen_in_training.append(f"{branch} fold {fold}")
            model = restore_model(state, branch, config, features.shape[1], path)
            result = predict(branch, config, model, arrays, index, fold=fold,
                             target_mean=torch.tensor(state["target_mean"]),
                             target_std=torch.tensor(state["target_std"]))
            outputs[branch].append(result.probabilities if branch == "snn" else result.regression)
    if seen_in_training:
        warnings.warn(f"subject {subject_key} was in the training set of {', '.join(seen_in_training)}; its "
                      "prediction is not held out", stacklevel=2)

    rows = [{"cycle": number, "start_frame": cycle.start, "end_frame": cycle.end} for number, cycle in enumerate(cycles)]
    patient: dict[str, object] = {"subject": subject_key}
    ids = [subject_key] * count
    if "snn" in outputs:
        probability = ensemble_mean(outputs["snn"])
        classes = (probability >= 0.5).astype(np.int64)
        for row, value, label in zip(rows, probability, classes):
            row.update(snn_abnormal_probability=float(value), snn_class=int(label))
        patient["snn_class"] = majority_vote(ids, classes)[subject_key]
    if "x3d" in outputs:
        regression = ensemble_mean(outputs["x3d"])
        for row, (pef, ratio) in zip(rows, regression):
            row.update(pef_l_s=float(pef), fev1_fvc=float(ratio), x3d_class=int(ratio < FIXED_RATIO))
        patient["pef_l_s"] = round(patient_means(ids, regression[:, 0])[subject_key], 4)
        patient["fev1_fvc"] = round(patient_means(ids, regression[:, 1])[subject_key], 4)
        patient["x3d_class"] = int(patient["fev1_fvc"] < FIXED_RATIO)

    report = {"subject": subject_key, "recording": str(recording_path), "modality": config.data.modality,
              "models": sum(len(values) for values in outputs.values()), "held_out": not seen_in_training,
              "cycles": rows, "patient": patient}
    folder = Path(out_dir) if out_dir is not None else run_dir
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    path = atomic_write(folder / "predictions.json", lambda temporary: Path(temporary).write_text(text))
    report["path"] = str(path)
    return report
