"""The main job's command line: results on good input, one clear line and exit 2 on bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest
from nir_traces import REFERENCE_DIR, reference_trace

from neuro.nir_io import write_graph

def _load_main():
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_backends.py"
    spec = importlib.util.spec_from_file_location("compare_backends", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main, script


MAIN, SCRIPT = _load_main()


def _bad_input(capsys, argv: list[str]) -> str:
    code = MAIN(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture()
def one_neuron_files(tmp_path):
    trace = reference_trace("exact")
    csv = tmp_path / "input.csv"
    np.savetxt(csv, trace[:, :1], delimiter=",", fmt="%d")
    graph = tmp_path / "lif.nir"
    graph.write_bytes((REFERENCE_DIR / "lif_norse.nir").read_bytes())
    return graph, csv


def test_missing_graph_file(capsys, tmp_path, one_neuron_files):
    _, csv = one_neuron_files
    line = _bad_input(capsys, ["--graph", str(tmp_path / "absent.nir"), "--input", str(csv)])
    assert "absent.nir" in line
    assert "not found" in line


def test_graph_not_hdf5(capsys, tmp_path, one_neuron_files):
    _, csv = one_neuron_files
    text = tmp_path / "graph.nir"
    text.write_text("hello")
    assert "not an HDF5 file" in _bad_input(capsys, ["--graph", str(text), "--input", str(csv)])


def test_unsupported_node_named(capsys, tmp_path):
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2])}),
               "gate": nir.Threshold(threshold=np.array([0.5, 0.5])),
               "output": nir.Output(output_type={"output": np.array([2])})},
        edges=[("input", "gate"), ("gate", "output")],
    )
    path = write_graph(graph, tmp_path / "threshold.nir")
    spikes = tmp_path / "spikes.npy"
    np.save(spikes, np.ones((4, 2)))
    line = _bad_input(capsys, ["--graph", str(path), "--input", str(spikes), "--backends", "snntorch"])
    assert "Threshold" in line
    assert "'gate'" in line


def test_input_shape_mismatch(capsys, tmp_path, one_neuron_files):
    graph, _ = one_neuron_files
    spikes = tmp_path / "spikes.npy"
    np.save(spikes, np.ones((10, 3, 7)))
    line = _bad_input(capsys, ["--graph", str(graph), "--input", str(spikes)])
    assert "(10, 3, 7)" in line
    assert "(T, 1)" in line


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_empty_input(capsys, tmp_path, one_neuron_files, suffix):
    graph, _ = one_neuron_files
    spikes = tmp_path / f"empty{suffix}"
    if suffix == ".npy":
        np.save(spikes, np.zeros((0, 1)))
    else:
        spikes.write_text("")
    assert "empty" in _bad_input(capsys, ["--graph", str(graph), "--input", str(spikes)])


def test_pickled_npy_rejected(capsys, tmp_path, one_neuron_files):
    graph, _ = one_neuron_files
    spikes = tmp_path / "objects.npy"
    np.save(spikes, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "could not be read" in _bad_input(capsys, ["--graph", str(graph), "--input", str(spikes)])


@pytest.mark.parametrize("dt", ["0", "-1e-3"])
def test_non_positive_dt(capsys, dt):
    assert "--dt" in _bad_input(capsys, [f"--dt={dt}"])


def test_unknown_backend(capsys):
    line = _bad_input(capsys, ["--backends", "snntorch,loihi9"])
    assert "loihi9" in line
    assert "lava-fixed" in line


def test_corrupt_checkpoint(capsys, tmp_path):
    path = tmp_path / "snn.pt"
    path.write_bytes(b"\x00garbage")
    assert "snn.pt" in _bad_input(capsys, ["--checkpoint", str(path)])


def test_fusion_checkpoint_points_to_snn(capsys, tmp_path):
    import torch

    path = tmp_path / "last.pt"
    torch.save({"format": "pulmofusion-model", "format_version": 1}, path)
    assert "pass the snn.pt next to it" in _bad_input(capsys, ["--checkpoint", str(path)])


def test_foreign_graph_runs_and_reports(tmp_path, one_neuron_files, capsys):
    graph, csv = one_neuron_files
    out = tmp_path / "out"
    code = MAIN(["--graph", str(graph), "--input", str(csv), "--dt", "1e-4", "--backends", "snntorch,norse",
                 "--repeats", "2", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert [row["backend"] for row in results["backends"]] == ["snntorch", "norse"]
    for row in results["backends"]:
        assert row["spikes_identical"] is True
        assert row["spikes_per_clip"] == 4
        assert row["latency_per_clip_s"]["repeats"] == 2
    assert results["cnn"] is None
    for name in ("results.md", "graph.nir", "raster_snntorch.png", "raster_norse.png", "spikes_per_layer.png"):
        assert (out / name).stat().st_size > 0, name
    assert "snntorch" in capsys.readouterr().out


def test_default_run_small(tmp_path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--clips", "2", "--steps", "8", "--backends", "snntorch,norse",
         "--repeats", "1", "--skip-cnn", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PULMOFUSION_CACHE": str(tmp_path / "cache")},  # keep the user's cache untouched
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 8
    assert results["clips"] == 2
    assert all(row["spikes_identical"] for row in results["backends"])
    assert results["backends"][0]["synaptic_operations_per_clip"] > 0
    assert "segmented from" in results["workload"]
    assert any((tmp_path / "cache").iterdir())
    written = nir.read(out / "graph.nir")
    assert "lif_out" in written.nodes
    with h5py.File(out / "graph.nir") as handle:
        assert "version" in handle


def test_parameters_lava_cannot_express(capsys, tmp_path):
    ones = np.ones(1)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1])}),
               "fc": nir.Affine(weight=np.ones((1, 1)), bias=np.zeros(1)),
               "lif": nir.LIF(tau=ones * 1e-2, r=ones, v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0.5),
               "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
    )
    path = write_graph(graph, tmp_path / "reset.nir")
    spikes = tmp_path / "spikes.npy"
    np.save(spikes, np.ones((5, 1)))
    line = _bad_input(capsys, ["--graph", str(path), "--input", str(spikes), "--backends", "lava-float",
                               "--out", str(tmp_path / "out")])
    assert "v_reset" in line
    assert not (tmp_path / "out").exists()


def test_out_is_a_file(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert "not a folder" in _bad_input(capsys, ["--out", str(target), "--skip-cnn"])
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("metadata, message", [({"dt": "abc"}, "dt"), ({"dt": -1.0}, "dt"),
                                               ({"pulmofusion_format": "x"}, "integer version")])
def test_bad_graph_metadata(capsys, tmp_path, metadata, message):
    ones = np.ones(1)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1])}),
               "fc": nir.Affine(weight=np.ones((1, 1)), bias=np.zeros(1)),
               "lif": nir.LIF(tau=ones * 1e-2, r=ones, v_leak=ones * 0, v_threshold=ones, v_reset=ones * 0),
               "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")], metadata=metadata,
    )
    path = write_graph(graph, tmp_path / "meta.nir")
    spikes = tmp_path / "spikes.npy"
    np.save(spikes, np.ones((5, 1)))
    assert message in _bad_input(capsys, ["--graph", str(path), "--input", str(spikes)])


def test_huge_input_on_fixed_point(capsys, tmp_path, one_neuron_files):
    graph, _ = one_neuron_files
    spikes = tmp_path / "huge.npy"
    np.save(spikes, np.full((5, 1), 1e20))
    assert "lava-fixed" in _bad_input(capsys, ["--graph", str(graph), "--input", str(spikes)])


def test_graph_without_neurons_reports_output(tmp_path):
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([2])}),
               "fc": nir.Affine(weight=np.ones((1, 2)), bias=np.zeros(1)),
               "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "fc"), ("fc", "output")],
    )
    path = write_graph(graph, tmp_path / "affine.nir")
    spikes = tmp_path / "spikes.npy"
    np.save(spikes, np.ones((3, 2)))
    out = tmp_path / "out"
    assert MAIN(["--graph", str(path), "--input", str(spikes), "--backends", "snntorch", "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["backends"][0]
    assert row["spikes_identical"] is True
    assert row["output_agreement"] == 1.0
