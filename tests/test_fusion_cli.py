"""Tests of python -m fusion: help, exit codes, and train -> evaluate -> predict on tiny data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from cohort.simulator import simulate_cohort, write_metadata_csv
from fusion.cli import main

from fusion_stores import make_tiny_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[data]
folds = 2
[snn]
input_size = 16
conv_channels = [4, 8]
hidden = 16
[x3d]
size = 32
frames = 4
[fusion]
mode = "concat"
embed_dim = 8
heads = 2
[training]
epochs = 1
batch_size = 4
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    make_tiny_store(folder / "store.h5", subjects=6, clips=2)
    (folder / "tiny.toml").write_text(CONFIG)
    return folder


def test_help_of_every_command():
    for command in ("train", "evaluate", "predict"):
        completed = subprocess.run([sys.executable, "-m", "fusion", command, "--help"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, command
        assert "--verbose" in completed.stdout


def test_bad_config_exits_2(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nlr = 0\n")
    code = main(["train", "--config", str(bad), "--store", str(workspace / "store.h5"), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2
    assert "training.lr = 0.0 is invalid" in error
    assert error.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_bad_input_exits_2(workspace, tmp_path, capsys):
    config = str(workspace / "tiny.toml")
    pretrained = tmp_path / "pretrained.toml"
    pretrained.write_text(CONFIG.replace("[x3d]\n", '[x3d]\npretrained = "missing.pt"\n'))
    cases = [
        ["train", "--config", config, "--store", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "o")],
        ["evaluate", "--run", str(tmp_path / "no-run"), "--store", str(workspace / "store.h5")],
        ["train", "--config", config, "--store", str(workspace / "store.h5"), "--out", str(tmp_path / "o"),
         "--threads", "0"],
        ["train", "--config", str(pretrained), "--store", str(workspace / "store.h5"), "--out", str(tmp_path / "o")],
    ]
    messages = []
    for argv in cases:
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.startswith("error: "), error
        assert error.count("\n") == 1, error
        messages.append(error)
    assert "missing.h5 not found" in messages[0]
    assert "config.json not found" in messages[1]
    assert "--threads must be at least 1" in messages[2]
    assert "x3d.pretrained = 'missing.pt' is invalid" in messages[3]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", config])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_train_evaluate_predict(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    store = str(workspace / "store.h5")
    assert main(["train", "--config", str(workspace / "tiny.toml"), "--store", store, "--out", str(run)]) == 0
    assert "trained 4 fold models" in capsys.readouterr().out
    assert main(["evaluate", "--run", str(run), "--store", store]) == 0
    output = capsys.readouterr().out
    assert "snn: per_cycle_accuracy" in output
    results = json.loads((run / "results.json").read_text())
    assert len(results["branches"]["x3d"]["cycles"]) == 12

    cohort = simulate_cohort(1, seed=3, size=(80, 64), modalities=("thermal",))
    session = cohort.sessions[0]
    recording = tmp_path / "SIM0001_thermal.h5"
    with h5py.File(recording, "w") as handle:
        handle.create_dataset("temperature_c", data=session.thermal.frames).attrs["fps"] = session.thermal.fps
    metadata = write_metadata_csv(cohort, tmp_path / "metadata.csv")

    assert main(["predict", "--run", str(run), "--recording", str(recording), "--metadata", str(metadata),
                 "--subject", "sim0001", "--out", str(tmp_path / "predicted")]) == 0
    report = json.loads((tmp_path / "predicted" / "predictions.json").read_text())
    assert report["subject"] == "SIM0001"
    assert report["models"] == 4
    assert report["held_out"] is True
    assert len(report["cycles"]) == len(session.cycles)
    for cycle in report["cycles"]:
        assert 0.0 <= cycle["snn_abnormal_probability"] <= 1.0
        assert cycle["x3d_class"] == int(cycle["fev1_fvc"] < 0.70)
    assert report["patient"]["x3d_class"] == int(report["patient"]["fev1_fvc"] < 0.70)
    output = capsys.readouterr().out
    assert "patient: subject SIM0001" in output
    assert re.search(r"cycle 0: start_frame \d+, end_frame \d+, snn_abnormal_probability \d\.\d{3}, snn_class [01],",
                     output)

    renamed = tmp_path / "SIM0002_thermal.h5"
    shutil.copy(recording, renamed)
    with pytest.warns(UserWarning, match="is named for subject SIM0002, not SIM0001"):
        assert main(["predict", "--run", str(run), "--recording", str(renamed), "--metadata", str(metadata),
                     "--subject", "SIM0001", "--out", str(tmp_path / "renamed")]) == 0

    assert main(["predict", "--run", str(run), "--recording", str(recording), "--metadata", str(metadata),
                 "--subject", "S99"]) == 2
    assert "no row for subject 'S99'" in capsys.readouterr().err


def test_interrupt_prints_one_line(workspace, monkeypatch, capsys):
    import fusion.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fusion.train, "train_experiment", interrupted)
    code = main(["train", "--config", str(workspace / "tiny.toml"), "--store", str(workspace / "store.h5"),
                 "--out", str(workspace / "interrupted")])
    assert code == 130
    assert capsys.readouterr().err == "interrupted; run the same command again to resume from the last finished epoch\n"
