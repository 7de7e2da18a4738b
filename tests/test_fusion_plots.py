"""Evaluation plots: PNG files written atomically, bad input rejected before drawing."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from fusion.plots import plot_confusion, plot_fold_spread, plot_predicted_vs_measured

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_width: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[1] >= min_width
    assert image.std() > 0.01  # something was drawn on the white background


def test_confusion_png(tmp_path):
    path = plot_confusion([[30, 2], [4, 12]], tmp_path / "confusion.png", title="thermal SNN")
    assert path == tmp_path / "confusion.png"
    assert_png(path, 400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]


def test_predicted_vs_measured_png(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.uniform(3.0, 9.0, 50)
    path = plot_predicted_vs_measured(measured, measured + rng.normal(0, 0.3, 50), tmp_path / "pef.png",
                                      quantity="PEF", unit="L/s")
    assert_png(path, 400)
    ratio = plot_predicted_vs_measured([0.7], [0.7], tmp_path / "ratio.png", quantity="FEV1/FVC", unit="")
    assert_png(ratio, 400)


def test_fold_spread_png(tmp_path):
    values = {"per_cycle_accuracy": [0.9, 0.92, 0.88, 0.95, 0.91], "f1": [0.8, 0.85, 0.82, 0.9, 0.84]}
    path = plot_fold_spread(values, tmp_path / "folds.png", title="thermal, 5 folds")
    assert_png(path, 400)
    first = path.read_bytes()
    plot_fold_spread(values, path, title="thermal, 5 folds")
    assert path.read_bytes() == first


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: plot_confusion([[1, 2, 3], [4, 5, 6]], p, title="t"), r"confusion has shape \(2, 3\)"),
        (lambda p: plot_confusion([[1, -2], [3, 4]], p, title="t"), "counts >= 0"),
        (lambda p: plot_predicted_vs_measured([1.0, 2.0], [1.0], p, quantity="PEF", unit="L/s"), "same non-zero length"),
        (lambda p: plot_predicted_vs_measured([1.0], [np.nan], p, quantity="PEF", unit="L/s"), "NaN"),
        (lambda p: plot_fold_spread({}, p, title="t"), "values is empty"),
        (lambda p: plot_fold_spread({"f1": []}, p, title="t"), r"values\['f1'\]"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "plot.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder .*absent not found"):
        plot_confusion([[1, 0], [0, 1]], tmp_path / "absent" / "c.png", title="t")
