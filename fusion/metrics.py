"""Per-cycle and per-patient metrics, and their summary over cross-validation folds.

Every function takes one entry per cycle (clip): the subject id it came from and a
class or value.  Classes are 0 = normal and 1 = abnormal (FEV1/FVC below the chosen
limit); abnormal is the positive class of F1.  Per-patient results first reduce each
subject's cycles to one value: the majority vote of its classes or the mean of its
values.  Empty input, inputs of different lengths and NaN raise ValueError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def _as_ids(subject_ids: Sequence[object]) -> np.ndarray:
    ids = np.asarray([str(subject_id) for subject_id in subject_ids], dtype=object)
    if ids.size == 0:
        raise ValueError("subject_ids is empty; metrics need at least one cycle")
    return ids


def _as_values(name: str, values: Sequence[float] | np.ndarray, count: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size != count:
        raise ValueError(f"{name} has shape {array.shape}; expected ({count},), one value per subject id")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values at positions {np.flatnonzero(~np.isfinite(array))[:10].tolist()}")
    return array


def _as_classes(name: str, classes: Sequence[int] | np.ndarray, count: int) -> np.ndarray:
    array = _as_values(name, classes, count)
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name} contains {sorted(set(array.tolist()) - {0.0, 1.0})[:10]}; classes must be 0 or 1")
    return array.astype(np.int64)


def _groups(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Return each subject id's cycle positions, in sorted id order."""
    return {subject_id: np.flatnonzero(ids == subject_id) for subject_id in sorted(set(ids.tolist()))}


def majority_vote(subject_ids: Sequence[object], classes: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Return each subject's most frequent class.

    A tie goes to abnormal (1): calling a patient abnormal sends them to a full lung
    function test, while a wrong normal call misses the disease.
    """
    ids = _as_ids(subject_ids)
    array = _as_classes("classes", classes, ids.size)
    return {subject_id: int(2 * array[rows].sum() >= rows.size) for subject_id, rows in _groups(ids).items()}


def patient_means(subject_ids: Sequence[object], values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Return the mean value of each subject's cycles."""
    ids = _as_ids(subject_ids)
    array = _as_values("values", values, ids.size)
    return {subject_id: float(array[rows].mean()) for subject_id, rows in _groups(ids).items()}


def _f1(true: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the abnormal class; 0 when there is neither a true nor a predicted abnormal."""
    true_positive = int(((true == 1) & (predicted == 1)).sum())
    denominator = int((true == 1).sum() + (predicted == 1).sum())
    return 2.0 * true_positive / denominator if denominator else 0.0


def classification_metrics(
    subject_ids: Sequence[object],
    true_labels: Sequence[int] | np.ndarray,
    predicted_labels: Sequence[int] | np.ndarray,
) -> dict[str, object]:
    """Return accuracy and F1 per cycle and per patient, and the per-cycle confusion matrix.

    Keys: ``per_cycle_accuracy``, ``per_patient_accuracy`` (majority vote of each
    patient's predictions against its true label), ``f1`` and ``per_patient_f1`` (abnormal
    is positive; 0 when neither truth nor prediction has an abnormal), ``confusion``
    ``[[tn, fp], [fn, tp]]`` over cycles, ``n_cycles`` and ``n_patients``.  A patient
    whose cycles carry different true labels raises ValueError.
    """
    ids = _as_ids(subject_ids)
    true = _as_classes("true_labels", true_labels, ids.size)
    predicted = _as_classes("predicted_labels", predicted_labels, ids.size)
    groups = _groups(ids)
    mixed = [subject_id for subject_id, rows in groups.items() if np.unique(true[rows]).size > 1]
    if mixed:
        raise ValueError(
            f"subjects {mixed[:10]} have cycles with different true labels; a patient's label must be the same "
            "for all of its cycles (use a per-subject label rule)"
        )
    patient_true = np.array([true[rows[0]] for rows in groups.values()])
    votes = majority_vote(ids, predicted)
    patient_predicted = np.array([votes[subject_id] for subject_id in groups])

    confusion = [
        [int(((true == 0) & (predicted == 0)).sum()), int(((true == 0) & (predicted == 1)).sum())],
        [int(((true == 1) & (predicted == 0)).sum()), int(((true == 1) & (predicted == 1)).sum())],
    ]
    return {
        "per_cycle_accuracy": float((true == predicted).mean()),
        "per_patient_accuracy": float((patient_true == patient_predicted).mean()),
        "f1": _f1(true, predicted),
        "per_patient_f1": _f1(patient_true, patient_predicted),
        "confusion": confusion,
        "n_cycles": int(ids.size),
        "n_patients": len(groups),
    }


def regression_metrics(
    subject_ids: Sequence[object],
    measured: Sequence[float] | np.ndarray,
    predicted: Sequence[float] | np.ndarray,
) -> dict[str, float | int]:
    """Return relative RMSE and MAE per cycle and per patient.

    ``relative_rmse`` is the RMSE over the mean measured value, ``mae`` the mean absolute
    error in the unit of ``measured``.  The ``per_patient_`` variants first average each
    patient's measured and predicted values.  ``n`` is the number of cycles.  A mean
    measured value of 0 raises ValueError, because the relative RMSE is undefined.
    """
    ids = _as_ids(subject_ids)
    measured = _as_values("measured", measured, ids.size)
    predicted = _as_values("predicted", predicted, ids.size)
    patient_measured = np.array(list(patient_means(ids, measured).values()))
    patient_predicted = np.array(list(patient_means(ids, predicted).values()))
    if measured.mean() == 0.0:
        raise ValueError("the mean measured value is 0, so the relative RMSE is undefined; check the targets")

    def relative_rmse(truth: np.ndarray, estimate: np.ndarray) -> float:
        return float(np.sqrt(np.mean((estimate - truth) ** 2)) / truth.mean())

    return {
        "relative_rmse": relative_rmse(measured, predicted),
        "mae": float(np.abs(predicted - measured).mean()),
        "per_patient_relative_rmse": relative_rmse(patient_measured, patient_predicted),
        "per_patient_mae": float(np.abs(patient_predicted - patient_measured).mean()),
        "n": int(ids.size),
    }


def ensemble_mean(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Return the element-wise mean of the outputs of several models (for example fold models).

    All arrays must have the same shape; NaN raises ValueError.
    """
    if len(outputs) == 0:
        raise ValueError("outputs is empty; pass the output of at least one model")
    arrays = [np.asarray(output, dtype=np.float64) for output in outputs]
    shapes = sorted({array.shape for array in arrays})
    if len(shapes) > 1:
        raise ValueError(f"outputs have different shapes {shapes}; every model must score the same cycles")
    stacked = np.stack(arrays)
    if not np.isfinite(stacked).all():
        raise ValueError("outputs contain NaN or infinite values")
    return stacked.mean(axis=0)


def summarise_folds(folds: Sequence[Mapping[str, float]]) -> dict[str, dict[str, object]]:
    """Return ``{metric: {"mean", "std", "values"}}`` over folds.

    ``std`` is the population standard deviation (ddof = 0) of the fold values, so one
    fold gives 0.  Every fold must report the same metric names; non-numeric entries
    such as a confusion matrix must be left out by the caller.
    """
    if len(folds) == 0:
        raise ValueError("folds is empty; pass the metrics of at least one fold")
    names = list(folds[0])
    for index, fold in enumerate(folds):
        if sorted(fold) != sorted(names):
            raise ValueError(f"fold {index} reports metrics {sorted(fold)}, but fold 0 reports {sorted(names)}")
    summary = {}
    for name in names:
        values = _as_values(f"metric {name!r} over folds", [fold[name] for fold in folds], len(folds))
        summary[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=0)), "values": values.tolist()}
    return summary


def metrics_markdown(table: Mapping[str, Mapping[str, Mapping[str, object]]], *, digits: int = 3) -> str:
    """Return a Markdown table with one row per ``table`` key and "mean ± std" cells.

    ``table`` maps a row name (for example "thermal, multi-modal") to a
    ``summarise_folds`` result.  Columns are the union of metric names in first-seen
    order; a metric a row lacks shows as an en dash.
    """
    if not table:
        raise ValueError("table is empty; pass at least one row")
    columns: list[str] = []
    for summary in table.values():
        columns.extend(name for name in summary if name not in columns)
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row, summary in table.items():
        cells = []
        for name in columns:
            if name in summary:
                cells.append(f"{summary[name]['mean']:.{digits}f} ± {summary[name]['std']:.{digits}f}")
            else:
                cells.append("–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
