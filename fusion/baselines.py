"""Scores of predictions that use no video, for reading the cross-validation results.

Per fold, on that fold's test subjects (``folds.json`` of a trained run):

- ``majority_class``: every cycle gets the training subjects' most common class;
- ``training_mean``: PEF and FEV1/FVC are the training cycles' means;
- ``reference_equation``: PEF is the subject's predicted value from age, sex and height
  (``cohort.dataset.subject_reference_values``: Hankinson 1999 through pyspiro).

A model that learns from the clips should beat these.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cohort.dataset import ClipDataset, subject_reference_values
from cohort.store import CohortStore
from fusion.metrics import classification_metrics, regression_metrics, summarise_folds


def fold_baselines(run_dir: str | os.PathLike, store_path: str | os.PathLike, *, modality: str,
                   label: str) -> dict[str, dict]:
    """Score the three baselines on each fold of ``run_dir``; return summaries keyed by baseline name."""
    folds = json.loads((Path(run_dir) / "folds.json").read_text())["folds"]
    dataset = ClipDataset(store_path, modality=modality, label=label)
    ids = np.array(dataset.clip_subject_ids())
    labels = dataset.clip_labels()
    targets = dataset.clip_targets()
    with CohortStore.open(store_path) as store:
        reference_pef = {subject_id: subject_reference_values(subject_id, store.read_subject(subject_id)).predicted["pef"]
                         for subject_id in dataset.subject_ids}

    scores: dict[str, list[dict]] = {"majority_class": [], "training_mean": [], "reference_equation": []}
    for fold in folds:
        train = np.isin(ids, fold["train"])
        test = np.isin(ids, fold["test"])
        test_ids = ids[test].tolist()
        majority = int(labels[train].mean() >= 0.5)
        classes = classification_metrics(test_ids, labels[test], np.full(test.sum(), majority))
        scores["majority_class"].append({"per_cycle_accuracy": classes["per_cycle_accuracy"],
                                         "per_patient_accuracy": classes["per_patient_accuracy"]})
        mean_pef = np.full(test.sum(), targets["pef"][train].mean())
        mean_ratio = np.full(test.sum(), targets["fev1_fvc"][train].mean())
        pef = regression_metrics(test_ids, targets["pef"][test], mean_pef)
        ratio = regression_metrics(test_ids, targets["fev1_fvc"][test], mean_ratio)
        scores["training_mean"].append({"pef_relative_rmse": pef["relative_rmse"], "pef_mae_l_s": pef["mae"],
                                        "fev1_fvc_mae_points": 100.0 * ratio["mae"]})
        predicted = np.array([reference_pef[subject_id] for subject_id in test_ids])
        reference = regression_metrics(test_ids, targets["pef"][test], predicted)
        scores["reference_equation"].append({"pef_relative_rmse": reference["relative_rmse"],
                                             "pef_mae_l_s": reference["mae"]})
    return {name: summarise_folds(values) for name, values in scores.items()}
