"""``python -m hardware export``: the five artefacts, worst-case and calibrated scales, the NIR read-back, and bad input leaving no partial file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from hardware.cli import main
from hardware.export import EXPORT_FILES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A 16x16 PulmoSNN saved with save_snn, and the model itself."""
    from neuro.checkpoint import save_snn
    from neuro.model import PulmoSNN, SNNConfig

    model = PulmoSNN(SNNConfig(input_size=16, conv_channels=(2, 4), hidden=8, seed=3))
    path = save_snn(model, tmp_path_factory.mktemp("checkpoint") / "snn.pt")
    return model, path


@pytest.fixture(scope="module")
def exported(small_checkpoint, tmp_path_factory):
    _, checkpoint = small_checkpoint
    out = tmp_path_factory.mktemp("export") / "artefacts"
    code = main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--out", str(out)])
    return code, out


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_export_writes_four_files(exported, capsys):
    code, out = exported
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(EXPORT_FILES)
    assert _leftovers(out.parent) == []


def test_resources_json_counts_layers(exported):
    _, out = exported
    report = json.loads((out / "resources.json").read_text())
    assert report["fits"] is True
    layers = {layer["node"]: layer for layer in report["layers"]}
    assert list(layers) == ["lif1", "pool1_lif", "lif2", "pool2_lif", "lif3", "lif_out"]
    assert layers["lif1"]["neurons"] == 2 * 8 * 8
    assert layers["lif3"]["connections"] == 8 * 16
    assert report["totals"]["neurons"] == 128 + 32 + 64 + 16 + 8 + 2
    assert "Fits on one loihi2: yes" in (out / "resources.md").read_text()


def test_nir_file_reruns_like_model(exported, small_checkpoint):
    from neuro.backends import create_backend

    model, _ = small_checkpoint
    _, out = exported
    graph = nir.read(out / "graph.nir")
    assert isinstance(graph, nir.NIRGraph)
    spikes = (np.random.default_rng(4).random((10, 2, 1, 16, 16)) < 0.4).astype(np.float32)
    with torch.no_grad():
        output, records = model(torch.from_numpy(spikes), record=True)
    run = create_backend("reference").run(graph, spikes.astype(np.float64), model.config.dt)
    assert np.array_equal(run.output, output.numpy())
    for name in ("lif1", "pool1_lif", "lif2", "pool2_lif", "lif3", "lif_out"):
        assert np.array_equal(run.spikes[name], records[name].numpy()), name
    assert records["lif1"].sum() > 0


def test_netx_file_names_blocks(exported):
    import h5py

    _, out = exported
    with h5py.File(out / "network.net", "r") as handle:
        names = [handle["layer"][key].attrs.get("name") for key in sorted(handle["layer"], key=int)]
        assert int(handle.attrs["reset_interval"]) == 8 + 6
        assert int(handle.attrs["reset_offset"]) == 1
    assert names == [None, "lif1", "pool1_lif", "lif2", "pool2_lif", None, "lif3", "lif_out"]


def test_summary_printed(small_checkpoint, tmp_path, capsys):
    _, checkpoint = small_checkpoint
    assert main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "reset_interval=14, reset_offset=1" in printed
    assert "resources on loihi2: fits" in printed
    assert "layer 'lif3': weight exponent" in printed


def test_existing_folder_keeps_other_files(small_checkpoint, tmp_path):
    _, checkpoint = small_checkpoint
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    (out / "graph.nir").write_text("old")
    assert main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "keep"
    assert isinstance(nir.read(out / "graph.nir"), nir.NIRGraph)
    assert _leftovers(tmp_path) == []
    assert _leftovers(out) == []


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ")
    assert "\n" not in error
    return error


def test_other_checkpoint_version_rejected(small_checkpoint, tmp_path, capsys):
    model, _ = small_checkpoint
    payload = {"format": "pulmofusion-snn", "format_version": 2, "config": model.config.to_dict(),
               "state_dict": model.state_dict()}
    checkpoint = tmp_path / "v2.pt"
    torch.save(payload, checkpoint)
    out = tmp_path / "out"
    error = _fails(["export", "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert "checkpoint format version 2" in error
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_invalid_graph_rejected(tmp_path, capsys):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not a graph")
    out = tmp_path / "out"
    error = _fails(["export", "--graph", str(bad), "--out", str(out)], capsys)
    assert "is not an HDF5 file" in error
    assert not out.exists()


def test_not_writable_folder_rejected(small_checkpoint, tmp_path, capsys, monkeypatch):
    import hardware.export as export

    _, checkpoint = small_checkpoint

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Running as root ignores folder permissions, so the refusal is simulated at the file system call.
    monkeypatch.setattr(export.tempfile, "mkdtemp", denied)
    out = tmp_path / "out"
    error = _fails(["export", "--checkpoint", str(checkpoint), "--out", str(out)], capsys)
    assert "is not writable" in error
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_rejected(small_checkpoint, tmp_path, capsys):
    _, checkpoint = small_checkpoint
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        error = _fails(["export", "--checkpoint", str(checkpoint), "--out", str(parent / "out")], capsys)
    finally:
        parent.chmod(0o700)
    assert "is not writable" in error
    assert list(parent.iterdir()) == []


def test_out_below_a_file_rejected(small_checkpoint, tmp_path, capsys):
    _, checkpoint = small_checkpoint
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = _fails(["export", "--checkpoint", str(checkpoint), "--out", str(blocker / "out")], capsys)
    assert f"{blocker} is a file, not a folder; choose another --out" in error
    error = _fails(["export", "--checkpoint", str(checkpoint), "--out", str(blocker)], capsys)
    assert "is a file, not a folder" in error
    assert blocker.read_text() == "x"


def test_oversize_network_stops_export(small_checkpoint, tmp_path, capsys):
    _, checkpoint = small_checkpoint
    limits = tmp_path / "tiny.json"
    limits.write_text(json.dumps({"name": "tiny", "cores_per_chip": 2}))
    out = tmp_path / "out"
    argv = ["export", "--checkpoint", str(checkpoint), "--steps", "8", "--chip-limits", str(limits), "--out", str(out)]
    error = _fails(argv, capsys)
    assert "does not fit tiny" in error
    assert "--allow-oversize" in error
    assert not out.exists()
    assert _leftovers(tmp_path) == []

    assert main(argv + ["--allow-oversize"]) == 0
    captured = capsys.readouterr()
    assert "warning: the network does not fit tiny" in captured.err
    assert "DOES NOT FIT" in captured.out
    assert json.loads((out / "resources.json").read_text())["fits"] is False


@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_nothing(small_checkpoint, tmp_path, monkeypatch, existing):
    import hardware.export as export

    _, checkpoint = small_checkpoint

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "export_netx", fail)
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "graph.nir").write_text("old")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    if existing:
        assert sorted(path.name for path in out.iterdir()) == ["graph.nir"]
        assert (out / "graph.nir").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == (["out"] if existing else [])


def test_graph_without_dt_needs_dt(small_checkpoint, tmp_path, capsys):
    from neuro.nir_io import model_to_nir

    model, _ = small_checkpoint
    graph = model_to_nir(model)
    graph.metadata = {}
    path = tmp_path / "g.nir"
    nir.write(path, graph)
    error = _fails(["export", "--graph", str(path), "--out", str(tmp_path / "out")], capsys)
    assert "pass the time step in seconds with --dt" in error
    assert main(["export", "--graph", str(path), "--dt", "0.001", "--steps", "8", "--out", str(tmp_path / "out")]) == 0


def test_module_entry_point_usage_error():
    result = subprocess.run([sys.executable, "-m", "hardware", "export"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "--out" in result.stderr


@pytest.fixture(scope="module")
def simulation_cache(tmp_path_factory):
    """A private cohort cache, so the calibration clips leave the user's cache untouched."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PULMOFUSION_CACHE", str(tmp_path_factory.mktemp("cohort-cache")))
        yield


@pytest.fixture(scope="module")
def calibrated(small_checkpoint, simulation_cache, tmp_path_factory):
    """A calibrated export on two simulated clips: exit code, output folder and printed summary."""
    _, checkpoint = small_checkpoint
    out = tmp_path_factory.mktemp("calibrated") / "artefacts"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--calibration-clips", "2",
                     "--out", str(out)])
    return code, out, printed.getvalue()


def test_worst_case_export_records_policy(exported):
    _, out = exported
    record = json.loads((out / "quantisation.json").read_text())
    assert record["policy"] == "worst_case"
    assert record["calibration_clips"] == 0
    assert record["calibration"] is None
    assert record["overflow"] is None
    assert list(record["layers"]) == ["lif1", "pool1_lif", "lif2", "pool2_lif", "lif3", "lif_out"]
    assert all(layer["row_scales"] is None for layer in record["layers"].values())
    assert all(layer["scale"] > 0 for layer in record["layers"].values())


@pytest.mark.slow
def test_calibrated_export_records_policy(calibrated):
    code, out, _ = calibrated
    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(EXPORT_FILES)
    assert _leftovers(out.parent) == []
    record = json.loads((out / "quantisation.json").read_text())
    assert record["policy"] == "calibrated"
    assert record["calibration_clips"] == 2
    assert record["calibration"]["steps"] == 8
    assert record["calibration"]["percentile"] == 100.0
    assert record["calibration"]["headroom"] == 1.25
    assert "16x16 spikes" in record["calibration"]["input"]
    assert record["overflow"]["total"] == sum(event["count"] for event in record["overflow"]["events"])


@pytest.mark.slow
def test_calibrated_scales_differ_from_worst_case(calibrated, exported):
    worst = json.loads((exported[1] / "quantisation.json").read_text())["layers"]
    tuned = json.loads((calibrated[1] / "quantisation.json").read_text())["layers"]
    assert list(tuned) == list(worst)
    changed = [name for name in worst if tuned[name]["row_scales"][1] != worst[name]["scale"]]
    assert changed, (worst, tuned)
    assert all(tuned[name]["row_scales"] is not None for name in tuned)


@pytest.mark.slow
def test_calibrated_summary_names_scales(calibrated):
    _, out, printed = calibrated
    record = json.loads((out / "quantisation.json").read_text())
    assert "fixed-point scales: calibrated on 2 clips (percentile 100, headroom 1.25)" in printed
    assert f"{record['overflow']['total']} overflow events on them" in printed
    rows = record["layers"]["lif1"]["row_scales"]
    assert f"lif1: scale {rows[0]:.6g}..{rows[1]:.6g} per row" in printed


@pytest.mark.slow
def test_calibration_overflow_warned(small_checkpoint, simulation_cache, tmp_path, capsys, monkeypatch):
    # The small SNN's scales are set by its 8-bit weight grid, so its calibration clips cannot
    # overflow, so an emulator that reports one u wrap replaces the real one here.
    from neuro.backends.lava import integer_model

    def emulate_with_wrap(plan, data, **kwargs):
        event = integer_model.OverflowEvents(layer="lif1", kind="u wrap", count=3, entries=100, first=(2, 0, 5),
                                             peak=1.5)
        return integer_model.IntegerRun(raw_spikes={}, raw_voltages={},
                                        overflow=integer_model.OverflowReport([event]))

    monkeypatch.setattr(integer_model, "emulate", emulate_with_wrap)
    _, checkpoint = small_checkpoint
    out = tmp_path / "out"
    code = main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--calibration-clips", "2",
                 "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    record = json.loads((out / "quantisation.json").read_text())
    assert record["overflow"]["total"] == 3
    assert record["overflow"]["events"][0]["layer"] == "lif1"
    assert record["overflow"]["events"][0]["first"] == [2, 0, 5]
    warning_lines = [line for line in captured.err.splitlines() if "overflow events" in line]
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("warning: the calibrated integer network has 3 overflow events on its 2 "
                                       "calibration clips: lif1: 3 u wrap events")
    assert "3 overflow events on them" in captured.out


@pytest.mark.parametrize("options, message", [
    (["--calibration-clips", "-1"], "--calibration-clips must be >= 0"),
    (["--calibration-clips", "2", "--percentile", "0"], "CalibrationConfig.percentile = 0.0 is invalid"),
    (["--calibration-clips", "2", "--headroom", "0.5"], "CalibrationConfig.headroom = 0.5 is invalid"),
])
def test_invalid_calibration_rejected(small_checkpoint, tmp_path, capsys, options, message):
    _, checkpoint = small_checkpoint
    error = _fails(["export", "--checkpoint", str(checkpoint), *options, "--out", str(tmp_path / "out")], capsys)
    assert message in error
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_calibration_options_without_clips_warned(small_checkpoint, tmp_path, capsys):
    _, checkpoint = small_checkpoint
    out = tmp_path / "out"
    assert main(["export", "--checkpoint", str(checkpoint), "--steps", "8", "--headroom", "2",
                 "--out", str(out)]) == 0
    assert "take effect only with --calibration-clips > 0" in capsys.readouterr().err
    assert json.loads((out / "quantisation.json").read_text())["policy"] == "worst_case"
