"""Writing the SNN as NIR, reading it back, and rejecting broken or hostile NIR files."""

from __future__ import annotations

import h5py
import nir
import numpy as np
import pytest

from neuro.graph import infer_shapes
from neuro.nir_io import FORMAT_VERSION, GraphFileError, read_graph, write_graph


def _one_neuron_graph(**lif_overrides) -> nir.NIRGraph:
    params = dict(tau=np.array([0.01]), r=np.array([1.0]), v_leak=np.array([0.0]),
                  v_threshold=np.array([1.0]), v_reset=np.array([0.0]))
    params.update(lif_overrides)
    return nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1])}),
               "fc": nir.Affine(weight=np.ones((1, 1)), bias=np.zeros(1)),
               "lif": nir.LIF(**params),
               "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
    )


def test_round_trip_keeps_weights_shapes_metadata(small_snn, tmp_path):
    model, graph = small_snn
    path = write_graph(graph, tmp_path / "snn.nir")
    loaded, metadata = read_graph(path)
    assert metadata["pulmofusion_format"] == FORMAT_VERSION
    assert metadata["dt"] == pytest.approx(model.config.dt)
    assert infer_shapes(loaded) == infer_shapes(graph)
    assert np.array_equal(loaded.nodes["conv1"].weight, model.conv1.weight.detach().numpy())
    assert loaded.nodes["lif1"].tau.shape == (4, 16, 16)
    assert nir.read(path).nodes.keys() == graph.nodes.keys()


def test_write_leaves_no_temporary_files(small_snn, tmp_path):
    _, graph = small_snn
    write_graph(graph, tmp_path / "snn.nir")
    assert [p.name for p in tmp_path.iterdir()] == ["snn.nir"]


def test_write_into_missing_folder_fails_cleanly(small_snn, tmp_path):
    _, graph = small_snn
    with pytest.raises(GraphFileError, match="does not exist"):
        write_graph(graph, tmp_path / "absent" / "snn.nir")


def test_missing_file(tmp_path):
    with pytest.raises(GraphFileError, match="not found"):
        read_graph(tmp_path / "nothing.nir")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.nir"
    path.write_text("this is not a graph")
    with pytest.raises(GraphFileError, match="not an HDF5 file"):
        read_graph(path)


def test_hdf5_without_graph(tmp_path):
    path = tmp_path / "empty.nir"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(GraphFileError, match="not a NIR graph"):
        read_graph(path)


def test_unknown_node_type(tmp_path):
    path = write_graph(_one_neuron_graph(), tmp_path / "g.nir")
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/lif/type"]
        handle["node/nodes/lif"].create_dataset("type", data="Teleporter", dtype=h5py.string_dtype())
    with pytest.raises(GraphFileError, match="could not be read"):
        read_graph(path)


def test_huge_declared_array_rejected_before_loading(tmp_path):
    path = write_graph(_one_neuron_graph(), tmp_path / "g.nir")
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/fc/weight"]
        handle["node/nodes/fc"].create_dataset("weight", shape=(2**15, 2**14), dtype="f4", chunks=(64, 64),
                                               compression="gzip")
    with pytest.raises(GraphFileError, match="limit"):
        read_graph(path)


@pytest.mark.parametrize("overrides, message", [
    ({"tau": np.array([np.nan])}, "NaN"),
    ({"tau": np.array([-1.0])}, "tau must be > 0"),
])
def test_bad_neuron_parameters(tmp_path, overrides, message):
    path = write_graph(_one_neuron_graph(**overrides), tmp_path / "g.nir")
    with pytest.raises(GraphFileError, match=message):
        read_graph(path)


def test_parameter_of_wrong_length(tmp_path):
    path = write_graph(_one_neuron_graph(), tmp_path / "g.nir")
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/lif/v_threshold"]
        handle["node/nodes/lif"].create_dataset("v_threshold", data=np.ones(3))
    with pytest.raises(GraphFileError, match="same shape"):
        read_graph(path)


def test_cycle_rejected(tmp_path):
    graph = _one_neuron_graph()
    graph.edges.append(("lif", "fc"))
    path = write_graph(graph, tmp_path / "g.nir")
    with pytest.raises(GraphFileError, match="cycle"):
        read_graph(path)


def test_shape_mismatch_names_node(tmp_path):
    graph = _one_neuron_graph()
    graph.nodes["fc"] = nir.Affine(weight=np.ones((1, 5)), bias=np.zeros(1))
    path = write_graph(graph, tmp_path / "g.nir")
    with pytest.raises(GraphFileError, match="'fc'"):
        read_graph(path)


def test_newer_format_rejected(tmp_path):
    graph = _one_neuron_graph()
    graph.metadata = {"pulmofusion_format": FORMAT_VERSION + 1}
    path = write_graph(graph, tmp_path / "g.nir")
    with pytest.raises(GraphFileError, match="update the toolkit"):
        read_graph(path)
