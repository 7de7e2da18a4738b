"""Evaluation of a trained experiment: every fold model on its own test subjects.

``evaluate_experiment(run_dir, store)`` reads ``run_dir/config.json`` and each fold's
``last.pt``, runs the fold model on that fold's test subjects only, and computes with
``fusion.metrics``:

- SNN branch: per-cycle and per-patient (majority vote) accuracy and F1;
- X3D branch: relative RMSE and MAE of PEF (L/s) and of FEV1/FVC (MAE in percentage
  points), per cycle and per patient (patient means), and the accuracy and F1 of the
  class FEV1/FVC < 0.70 derived from the predicted ratio;

each as mean and standard deviation over folds.  It writes ``results.json``,
``results.md``, ``confusion.png``, ``pef_predicted_vs_measured.png`` (X3D branch) and
``fold_spread.png`` into ``run_dir``.

The ensemble of the fold models is not scored here.  Every cohort subject is in the
training set of all fold models but one, so an ensemble score on the cohort would
include subjects the models were trained on.  ``fusion.predict`` uses the ensemble on new
recordings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cohort.files import atomic_write
from fusion import checkpoint as model_checkpoint
from fusion.config import ConfigError, ExperimentConfig
from fusion.loop import CohortArrays, load_cohort, predict
from fusion.metrics import classification_metrics, metrics_markdown, regression_metrics, summarise_folds
from fusion.models import build_branch
from fusion.plots import plot_confusion, plot_fold_spread, plot_predicted_vs_measured
from fusion.train import fold_dir

logger = logging.getLogger(__name__)

ENSEMBLE_NOTE = ("not scored: every cohort subject is in the training set of all fold models but one, so an "
                 "ensemble score on the cohort would not be held out; the ensemble is used by 'predict' on new data")
SCALAR_CLASSIFICATION = ("per_cycle_accuracy", "per_patient_accuracy", "f1", "per_patient_f1")


def read_run_config(run_dir: str | os.PathLike) -> ExperimentConfig:
    """Read the configuration that ``train_experiment`` stored in ``run_dir``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found; pass the --out folder of a finished 'python -m fusion train'")
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path} is not valid JSON ({error}); train the experiment again") from None
    return ExperimentConfig.from_dict(values)


def restore_model(state: dict, branch: str, config: ExperimentConfig, metadata_dim: int, path: Path):
    """Build the ``branch`` model of ``config`` and load the checkpoint weights ``state["model"]``."""
    model = build_branch(branch, config, metadata_dim)
    try:
        model.load_state_dict(state["model"], strict=True)
    except (RuntimeError, KeyError, TypeError) as error:
        raise model_checkpoint.CheckpointError(f"{path}: the weights do not fit the configured {branch} model "
                                               f"({str(error).splitlines()[0]}); train the experiment again") from None
    model.eval()
    return model


def load_fold(run_dir: Path, config: ExperimentConfig, branch: str, fold: int, cohort: str | None) -> tuple[dict, Path]:
    """Load and check the finished checkpoint of one fold; ``cohort`` None skips the cohort check."""
    path = fold_dir(run_dir, config.data.modality, branch, fold) / "last.pt"
    state = model_checkpoint.load_checkpoint(path)
    if state["config_hash"] != config.hash():
        raise model_checkpoint.CheckpointError(f"{path} belongs to another configuration than {run_dir}/config.json; "
                                               "train the experiment again")
    if cohort is not None and state["cohort"] != cohort:
        raise model_checkpoint.CheckpointError(f"{path} was trained on another cohort store than the one given; pass "
                                               "the store it was trained on")
    if state["epoch"] < config.training.epochs:
        raise model_checkpoint.CheckpointError(f"{path} contains {state['epoch']} of {config.training.epochs} epochs; "
                                               "finish training with 'python -m fusion train' (it resumes)")
    return state, path


def _true_labels(arrays: CohortArrays, index: np.ndarray) -> np.ndarray:
    """Return clip labels, replaced by the subject's majority label where a subject's clips disagree."""
    labels = arrays.labels[index].numpy()
    ids = np.array(arrays.subject_ids)[index]
    subject_labels = arrays.subject_labels()
    mixed = sorted({subject_id for subject_id in ids if len(set(labels[ids == subject_id])) > 1})
    if mixed:
        warnings.warn(f"subjects {mixed[:5]} have clips of both labels; their majority label is used for every clip",
                      stacklevel=2)
        labels = np.array([subject_labels[subject_id] for subject_id in ids])
    return labels


def _fold_metrics(branch: str, arrays: CohortArrays, index: np.ndarray, predictions) -> dict[str, float]:
    ids = [arrays.subject_ids[i] for i in index]
    classes = classification_metrics(ids, _true_labels(arrays, index), predictions.classes)
    metrics = {name: classes[name] for name in SCALAR_CLASSIFICATION}
    if branch == "x3d":
        measured = arrays.targets[index].numpy()
        pef = regression_metrics(ids, measured[:, 0], predictions.regression[:, 0])
        ratio = regression_metrics(ids, measured[:, 1], predictions.regression[:, 1])
        metrics.update({
            "pef_relative_rmse": pef["relative_rmse"], "pef_mae_l_s": pef["mae"],
            "pef_per_patient_relative_rmse": pef["per_patient_relative_rmse"],
            "fev1_fvc_relative_rmse": ratio["relative_rmse"], "fev1_fvc_mae_points": 100.0 * ratio["mae"],
            "fev1_fvc_per_patient_mae_points": 100.0 * ratio["per_patient_mae"],
        })
    return metrics, classes["confusion"]


def _cycle_rows(arrays: CohortArrays, index: np.ndarray, predictions, fold: int) -> list[dict]:
    """Return one JSON row per test clip with its label, prediction and, for X3D, measured and predicted values."""
    rows = []
    for position, clip in enumerate(index):
        row = {"fold": fold, "subject": arrays.subject_ids[clip], "label": int(arrays.labels[clip]),
               "predicted_class": int(predictions.classes[position]),
               "abnormal_probability": float(predictions.probabilities[position])}
        if predictions.regression is not None:
            row.update(pef_measured=float(arrays.targets[clip, 0]),
                       pef_predicted=float(predictions.regression[position, 0]),
                       fev1_fvc_measured=float(arrays.targets[clip, 1]),
                       fev1_fvc_predicted=float(predictions.regression[position, 1]))
        rows.append(row)
    return rows


def _row_name(config: ExperimentConfig, branch: str) -> str:
    mode = config.fusion.mode
    kind = "single-modal" if mode == "none" else f"multi-modal ({mode})"
    return f"{config.data.modality}, {branch.upper()}, {kind}"


def evaluate_experiment(run_dir: str | os.PathLike, store_path: str | os.PathLike, *, progress: bool = True) -> dict:
    """Score every fold model of ``run_dir`` on its test subjects; write and return the results."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    config = read_run_config(run_dir)
    cohort = model_checkpoint.cohort_identity(store_path)
    arrays = load_cohort(store_path, config.data.modality, config.data.label)
    results = {"config_hash": config.hash(), "cohort": cohort, "modality": config.data.modality,
               "label": config.data.label, "fusion_mode": config.fusion.mode, "branches": {},
               "ensemble": ENSEMBLE_NOTE}
    table = {}

    jobs = [(branch, fold) for branch in config.training.branches for fold in range(config.data.folds)]
    bar = tqdm(jobs, desc="evaluate", unit="fold", file=sys.stderr, disable=not progress, leave=False)
    for branch, fold in bar:
        state, path = load_fold(run_dir, config, branch, fold, cohort)

        model = restore_model(state, branch, config, arrays.features.shape[1], path)
        index = arrays.indices(state["test_ids"])
        predictions = predict(branch, config, model, arrays, index, fold=fold,
                              target_mean=torch.tensor(state["target_mean"]), target_std=torch.tensor(state["target_std"]))

        metrics, confusion = _fold_metrics(branch, arrays, index, predictions)
        entry = results["branches"].setdefault(branch, {"folds": [], "confusion": [[0, 0], [0, 0]], "cycles": []})
        entry["folds"].append(metrics)
        entry["confusion"] = (np.array(entry["confusion"]) + np.array(confusion)).tolist()
        entry["cycles"].extend(_cycle_rows(arrays, index, predictions, fold))

    for branch, entry in results["branches"].items():
        entry["summary"] = summarise_folds(entry["folds"])
        table[_row_name(config, branch)] = entry["summary"]
    results["seconds"] = time.perf_counter() - started
    _write_outputs(run_dir, config, results, table)
    return results


def _write_outputs(run_dir: Path, config: ExperimentConfig, results: dict, table: dict) -> None:
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(run_dir / "results.json", lambda temporary: Path(temporary).write_text(text))
    markdown = (f"# PulmoFusion cross-validation, {config.data.modality}, {config.data.folds} folds\n\n"
                f"Mean ± standard deviation over folds; each fold model is scored on its own test subjects only.\n\n"
                + metrics_markdown(table) + f"\nEnsemble of the fold models: {ENSEMBLE_NOTE}.\n")
    atomic_write(run_dir / "results.md", lambda temporary: Path(temporary).write_text(markdown))

    branches = results["branches"]
    main = "snn" if "snn" in branches else "x3d"
    plot_confusion(branches[main]["confusion"], run_dir / "confusion.png",
                   title=f"{_row_name(config, main)}, all folds' test cycles")
    if "x3d" in branches:
        cycles = branches["x3d"]["cycles"]
        plot_predicted_vs_measured([cycle["pef_measured"] for cycle in cycles],
                                   [cycle["pef_predicted"] for cycle in cycles],
                                   run_dir / "pef_predicted_vs_measured.png", quantity="PEF", unit="L/s")
    spread = {f"{branch} {name}": [fold[name] for fold in entry["folds"]]
              for branch, entry in branches.items() for name in ("per_cycle_accuracy", "per_patient_accuracy")}
    if "x3d" in branches:
        spread["x3d pef_relative_rmse"] = [fold["pef_relative_rmse"] for fold in branches["x3d"]["folds"]]
    plot_fold_spread(spread, run_dir / "fold_spread.png", title=f"{config.data.modality}: spread over folds")
