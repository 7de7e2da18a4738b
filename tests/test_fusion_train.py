"""End-to-end tests of fusion training, evaluation and checkpoints on a tiny store made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fusion.checkpoint import CheckpointError, cohort_identity, load_checkpoint, save_checkpoint
from fusion.config import ConfigError, ExperimentConfig, load_config
from fusion.evaluate import evaluate_experiment
from fusion.train import train_experiment
from neuro.checkpoint import load_snn

from fusion_stores import make_tiny_store

CONFIGS = Path(__file__).resolve().parents[1] / "fusion" / "configs"
SUBJECTS = 8
CLIPS_PER_SUBJECT = 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("store") / "tiny.h5")


@pytest.fixture(scope="module")
def tiny_config():
    return load_config(CONFIGS / "tiny.toml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_store, tiny_config):
    out = tmp_path_factory.mktemp("run") / "run"
    result = train_experiment(tiny_config, tiny_store, out, progress=False)
    return out, result


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_train_writes_every_fold(trained_run, tiny_config, tiny_store):
    out, result = trained_run
    assert [(fold.branch, fold.fold) for fold in result.folds] == [("snn", 0), ("snn", 1), ("x3d", 0), ("x3d", 1)]
    for fold in result.folds:
        state = load_checkpoint(fold.checkpoint)
        assert state["epoch"] == tiny_config.training.epochs
        assert len(state["history"]) == tiny_config.training.epochs
        assert state["cohort"] == cohort_identity(tiny_store)
        assert state["config_hash"] == tiny_config.hash()
        assert not set(state["train_ids"]) & set(state["test_ids"])
        assert len(state["train_ids"]) + len(state["test_ids"]) == SUBJECTS
        assert state["class_weights"][1] > state["class_weights"][0]
    snn = load_snn(out / "thermal" / "snn" / "fold0" / "snn.pt")
    reference = _weights(out / "thermal" / "snn" / "fold0" / "last.pt")
    assert torch.equal(snn.fc1.weight, reference["snn.fc1.weight"])
    folds = json.loads((out / "folds.json").read_text())
    assert folds["clip_shape"] == [1, 8, 32, 32]
    assert sorted(sum((fold["test"] for fold in folds["folds"]), [])) == [f"S{i:02d}" for i in range(SUBJECTS)]


@pytest.mark.slow
def test_evaluate_scores_held_out_cycles(trained_run, tiny_store):
    out, _ = trained_run
    results = evaluate_experiment(out, tiny_store, progress=False)
    for branch in ("snn", "x3d"):
        entry = results["branches"][branch]
        assert len(entry["cycles"]) == SUBJECTS * CLIPS_PER_SUBJECT
        assert sum(map(sum, entry["confusion"])) == SUBJECTS * CLIPS_PER_SUBJECT
        assert sum(entry["confusion"][1]) == 2 * CLIPS_PER_SUBJECT
        for name, summary in entry["summary"].items():
            assert len(summary["values"]) == 2, name
            assert np.isclose(summary["mean"], np.mean(summary["values"])), name
        accuracy = np.mean([c["predicted_class"] == c["label"] for c in entry["cycles"] if c["fold"] == 0])
        assert np.isclose(entry["folds"][0]["per_cycle_accuracy"], accuracy)
    pef = results["branches"]["x3d"]["summary"]["pef_relative_rmse"]["mean"]
    assert 0.0 < pef < 1.0
    for name in ("results.json", "results.md", "confusion.png", "pef_predicted_vs_measured.png", "fold_spread.png"):
        assert (out / name).stat().st_size > 0, name
    assert "thermal, SNN, multi-modal (attention)" in (out / "results.md").read_text()
    assert "not scored" in results["ensemble"]


@pytest.mark.slow
def test_seeded_runs_identical(trained_run, tiny_store, tiny_config, tmp_path):
    out, _ = trained_run
    second = tmp_path / "second"
    train_experiment(tiny_config, tiny_store, second, progress=False)
    first_results = evaluate_experiment(out, tiny_store, progress=False)
    second_results = evaluate_experiment(second, tiny_store, progress=False)
    for branch in ("snn", "x3d"):
        assert first_results["branches"][branch]["folds"] == second_results["branches"][branch]["folds"]
        for fold in (0, 1):
            path = Path(branch) / f"fold{fold}" / "last.pt"
            first = _weights(out / "thermal" / path)
            again = _weights(second / "thermal" / path)
            for name, tensor in first.items():
                assert torch.equal(again[name], tensor), (branch, fold, name)


@pytest.mark.slow
def test_resume_matches_uninterrupted(trained_run, tiny_store, tiny_config, tmp_path):
    out, _ = trained_run
    interrupted = tmp_path / "interrupted"
    partial = train_experiment(tiny_config, tiny_store, interrupted, stop_after=1, progress=False)
    assert all(fold.epochs == 1 for fold in partial.folds)
    assert load_checkpoint(interrupted / "thermal" / "x3d" / "fold1" / "last.pt")["epoch"] == 1
    resumed = train_experiment(tiny_config, tiny_store, interrupted, progress=False)
    assert all(fold.epochs == tiny_config.training.epochs for fold in resumed.folds)
    for branch in ("snn", "x3d"):
        for fold in (0, 1):
            path = Path("thermal") / branch / f"fold{fold}" / "last.pt"
            expected = _weights(out / path)
            actual = _weights(interrupted / path)
            for name, tensor in expected.items():
                assert torch.equal(actual[name], tensor), (branch, fold, name)


def test_checkpoint_format_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(missing)
    other = tmp_path / "other.pt"
    torch.save({"format": "pulmofusion-snn", "format_version": 1}, other)
    with pytest.raises(CheckpointError, match="not a PulmoFusion model checkpoint"):
        load_checkpoint(other)
    newer = tmp_path / "newer.pt"
    torch.save({"format": "pulmofusion-model", "format_version": 2}, newer)
    with pytest.raises(CheckpointError, match="format version 2"):
        load_checkpoint(newer)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"format": "pulmofusion-model", "format_version": 1, "config": {}}, incomplete)
    with pytest.raises(CheckpointError, match="lacks the keys"):
        load_checkpoint(incomplete)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "pulmofusion-model", "format_version": 1, "object": Path("x")}, unsafe)
    with pytest.raises(CheckpointError, match=str(unsafe)):
        load_checkpoint(unsafe)
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(tmp_path / "partial.pt", {"config": {}})
    assert not (tmp_path / "partial.pt").exists()


@pytest.mark.slow
def test_other_cohort_and_config_rejected(trained_run, tiny_store, tiny_config, tmp_path):
    out, _ = trained_run
    other_store = make_tiny_store(tmp_path / "other.h5", frames=6)
    assert cohort_identity(other_store) != cohort_identity(tiny_store)
    with pytest.raises(CheckpointError, match="another cohort store"):
        evaluate_experiment(out, other_store, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    changed = type(tiny_config).from_dict({**tiny_config.to_dict(), "training": {
        **tiny_config.to_dict()["training"], "lr": 0.5}})
    with pytest.raises(ConfigError, match="another configuration"):
        train_experiment(changed, tiny_store, copy, progress=False)


def test_non_finite_loss_stops_training(tiny_store, tiny_config, tmp_path):
    values = tiny_config.to_dict()
    values["training"].update(branches=["x3d"], lr=1e30)
    config = ExperimentConfig.from_dict(values)
    with pytest.raises(ValueError, match=r"x3d fold 0, epoch \d: the training loss is (nan|inf); lower training.lr"):
        train_experiment(config, tiny_store, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "thermal" / "x3d" / "fold0" / "last.pt"
    if last.exists():
        state = load_checkpoint(last)
        assert all(torch.isfinite(tensor).all() for tensor in state["model"].values() if tensor.is_floating_point())


def test_baselines_on_trained_folds(trained_run, tiny_store):
    from fusion.baselines import fold_baselines

    out, _ = trained_run
    baselines = fold_baselines(out, tiny_store, modality="thermal", label="fixed_ratio")
    folds = json.loads((out / "folds.json").read_text())["folds"]
    # Subjects S00 and S04 are abnormal; the training majority is normal in every fold.
    expected = [sum(1 for subject in fold["test"] if subject not in ("S00", "S04")) / len(fold["test"])
                for fold in folds]
    assert baselines["majority_class"]["per_patient_accuracy"]["values"] == pytest.approx(expected)
    assert baselines["training_mean"]["fev1_fvc_mae_points"]["mean"] > 0.0
    assert 0.0 < baselines["reference_equation"]["pef_relative_rmse"]["mean"] < 1.0
