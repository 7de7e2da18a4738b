"""PNG plots of evaluation results: confusion matrix, predicted against measured values,
and the spread of each metric over cross-validation folds.

Plots are drawn with matplotlib's Agg backend and written atomically through
``cohort.files.atomic_write``, so a failed plot leaves no partial file.  Each function
returns the path it wrote.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from cohort.files import atomic_write  # noqa: E402

logger = logging.getLogger(__name__)


def _save(figure: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.parent.is_dir():
        plt.close(figure)
        raise FileNotFoundError(f"folder {path.parent} not found; create it before writing the plot {path.name}")
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    finally:
        plt.close(figure)
    logger.info("wrote plot %s", path)
    return path


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    path: str | os.PathLike,
    *,
    title: str,
    class_names: Sequence[str] = ("normal", "abnormal"),
) -> Path:
    """Draw a confusion matrix (rows true class, columns predicted class) with counts in the cells."""
    matrix = np.asarray(confusion)
    classes = len(class_names)
    if matrix.shape != (classes, classes):
        raise ValueError(f"confusion has shape {matrix.shape}; expected ({classes}, {classes}) for classes {list(class_names)}")
    if not np.issubdtype(matrix.dtype, np.number) or (matrix < 0).any() or not np.isfinite(matrix).all():
        raise ValueError(f"confusion {matrix.tolist()} is invalid; it must contain counts >= 0")

    figure, axes = plt.subplots(figsize=(4.2, 3.6))
    image = axes.imshow(matrix, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, label="cycles")
    threshold = matrix.max() / 2.0 if matrix.max() > 0 else 1.0
    for row in range(classes):
        for column in range(classes):
            color = "white" if matrix[row, column] > threshold else "black"
            axes.text(column, row, f"{matrix[row, column]:g}", ha="center", va="center", color=color)
    axes.set_xticks(range(classes), class_names)
    axes.set_yticks(range(classes), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_predicted_vs_measured(
    measured: Sequence[float] | np.ndarray,
    predicted: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    *,
    quantity: str,
    unit: str,
) -> Path:
    """Draw a scatter of predicted against measured values with the identity line y = x.

    ``unit`` labels the axes (an empty string for a ratio such as FEV1/FVC).
    """
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if measured.ndim != 1 or measured.shape != predicted.shape or measured.size == 0:
        raise ValueError(f"measured {measured.shape} and predicted {predicted.shape} must be 1-D of the same non-zero length")
    if not (np.isfinite(measured).all() and np.isfinite(predicted).all()):
        raise ValueError("measured or predicted contains NaN or infinite values")

    label = f"{quantity} ({unit})" if unit else quantity
    low = float(min(measured.min(), predicted.min()))
    high = float(max(measured.max(), predicted.max()))
    margin = 0.05 * (high - low) if high > low else 0.5
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([low - margin, high + margin], [low - margin, high + margin], color="grey", linestyle="--",
              linewidth=1.0, label="y = x")
    axes.scatter(measured, predicted, s=12, alpha=0.7, color="tab:blue", label=f"{measured.size} cycles")
    axes.set_xlim(low - margin, high + margin)
    axes.set_ylim(low - margin, high + margin)
    axes.set_aspect("equal")
    axes.set_xlabel(f"measured {label}")
    axes.set_ylabel(f"predicted {label}")
    axes.set_title(f"{quantity}: predicted vs measured")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_fold_spread(values: Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str) -> Path:
    """Draw one box per metric with each fold's value as a dot on it."""
    if not values:
        raise ValueError("values is empty; pass at least one metric with its fold values")
    names = list(values)
    columns = []
    for name in names:
        column = np.asarray(values[name], dtype=np.float64)
        if column.ndim != 1 or column.size == 0 or not np.isfinite(column).all():
            raise ValueError(f"values[{name!r}] = {list(values[name])} is invalid; it must be a non-empty list of finite numbers")
        columns.append(column)

    figure, axes = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 1.5), 3.8))
    axes.boxplot(columns, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)  # fixed, so the same values draw the same picture
    for position, column in enumerate(columns, start=1):
        offsets = jitter.uniform(-0.12, 0.12, column.size)
        axes.scatter(position + offsets, column, s=16, color="tab:orange", zorder=3)
    axes.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    axes.set_ylabel("value over folds")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)
