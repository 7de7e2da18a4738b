"""Per-cycle and per-patient metrics, fold summaries and the Markdown table, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.metrics import (
    classification_metrics,
    ensemble_mean,
    majority_vote,
    metrics_markdown,
    patient_means,
    regression_metrics,
    summarise_folds,
)

IDS = ["P1", "P1", "P1", "P2", "P2", "P3", "P3", "P3", "P3"]


def test_majority_vote_and_tie():
    votes = majority_vote(IDS, [1, 0, 1, 0, 0, 1, 1, 0, 0])
    assert votes == {"P1": 1, "P2": 0, "P3": 1}  # P3 is a 2-2 tie, which goes to abnormal


def test_patient_means():
    means = patient_means(["b", "a", "b"], [1.0, 4.0, 3.0])
    assert means == {"a": 4.0, "b": 2.0}
    assert list(means) == ["a", "b"]


def test_classification_metrics_values():
    true = [1, 1, 1, 0, 0, 0, 0, 0, 0]
    predicted = [1, 0, 1, 0, 1, 1, 1, 0, 0]
    result = classification_metrics(IDS, true, predicted)
    # Cycles: tp 2, fn 1, fp 3, tn 3.
    assert result["confusion"] == [[3, 3], [1, 2]]
    assert result["per_cycle_accuracy"] == pytest.approx(5 / 9)
    assert result["f1"] == pytest.approx(2 * 2 / (3 + 5))
    # Patients: P1 true 1 voted 1, P2 true 0 voted 1 (tie), P3 true 0 voted 1 (tie).
    assert result["per_patient_accuracy"] == pytest.approx(1 / 3)
    assert result["per_patient_f1"] == pytest.approx(2 * 1 / (1 + 3))
    assert result["n_cycles"] == 9
    assert result["n_patients"] == 3


def test_f1_without_abnormal_is_zero():
    result = classification_metrics(["a", "b"], [0, 0], [0, 0])
    assert result["per_cycle_accuracy"] == 1.0
    assert result["f1"] == 0.0


def test_mixed_true_labels_rejected():
    with pytest.raises(ValueError, match=r"subjects \['P2'\] have cycles with different true labels"):
        classification_metrics(IDS, [1, 1, 1, 0, 1, 0, 0, 0, 0], [0] * 9)


def test_regression_metrics_values():
    ids = ["a", "a", "b", "b"]
    measured = [4.0, 6.0, 8.0, 10.0]
    predicted = [5.0, 5.0, 10.0, 10.0]
    result = regression_metrics(ids, measured, predicted)
    assert result["mae"] == pytest.approx((1 + 1 + 2 + 0) / 4)
    assert result["relative_rmse"] == pytest.approx(math.sqrt((1 + 1 + 4 + 0) / 4) / 7.0)
    # Patient means: measured a 5, b 9; predicted a 5, b 10.
    assert result["per_patient_mae"] == pytest.approx(0.5)
    assert result["per_patient_relative_rmse"] == pytest.approx(math.sqrt(0.5) / 7.0)
    assert result["n"] == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: majority_vote([], []), "subject_ids is empty"),
        (lambda: majority_vote(["a", "b"], [1]), r"classes has shape \(1,\); expected \(2,\)"),
        (lambda: majority_vote(["a"], [2]), r"classes contains \[2.0\]"),
        (lambda: patient_means(["a", "b"], [1.0, float("nan")]), r"values contains NaN .* positions \[1\]"),
        (lambda: regression_metrics(["a"], [0.0], [1.0]), "relative RMSE is undefined"),
        (lambda: regression_metrics(["a", "b"], [1.0, 2.0], [1.0]), "predicted has shape"),
        (lambda: classification_metrics(["a"], [1], [float("nan")]), "predicted_labels contains NaN"),
    ],
)
def test_bad_input_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ensemble_mean():
    result = ensemble_mean([np.array([1.0, 2.0]), np.array([3.0, 6.0])])
    assert result.tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="different shapes"):
        ensemble_mean([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="outputs is empty"):
        ensemble_mean([])
    with pytest.raises(ValueError, match="NaN"):
        ensemble_mean([np.array([np.nan])])


def test_summarise_folds_population_std():
    summary = summarise_folds([{"accuracy": 0.8, "mae": 2.0}, {"accuracy": 1.0, "mae": 4.0}])
    assert summary["accuracy"]["mean"] == pytest.approx(0.9)
    assert summary["accuracy"]["std"] == pytest.approx(0.1)
    assert summary["mae"]["values"] == [2.0, 4.0]
    assert summarise_folds([{"accuracy": 0.5}])["accuracy"]["std"] == 0.0
    with pytest.raises(ValueError, match="fold 1 reports metrics"):
        summarise_folds([{"accuracy": 0.8}, {"f1": 0.5}])
    with pytest.raises(ValueError, match="folds is empty"):
        summarise_folds([])


def test_metrics_markdown_table():
    table = {
        "thermal": summarise_folds([{"accuracy": 0.9, "f1": 0.8}, {"accuracy": 1.0, "f1": 0.9}]),
        "rgb": summarise_folds([{"accuracy": 0.7}, {"accuracy": 0.8}]),
    }
    assert metrics_markdown(table, digits=2) == (
        "| | accuracy | f1 |\n"
        "|---|---|---|\n"
        "| thermal | 0.95 ± 0.05 | 0.85 ± 0.05 |\n"
        "| rgb | 0.75 ± 0.05 | – |\n"
    )
    with pytest.raises(ValueError, match="table is empty"):
        metrics_markdown({})
