"""Write the PulmoFusion SNN as a NIR graph, and read and check NIR files from anyone.

The project writes the graph itself instead of going through a library exporter, so that
every node has its shapes set, every neuron parameter is a per-neuron array, and the graph
carries what NIR 1.0 leaves out.  Graph metadata written here:

``pulmofusion_format``  the version of this layout (``FORMAT_VERSION``),
``dt``                  the time step in seconds the graph was written for,
``producer``            "pulmofusion".

Files are written atomically: to a temporary file in the same folder, then renamed.
Reading never unpickles (NIR files are HDF5 and h5py reads arrays only); every problem
is raised as ``GraphFileError`` naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import nir
import numpy as np
import torch

from cohort.files import atomic_write
from neuro.graph import GraphStructureError, infer_shapes, layout, node_output_shape
from neuro.model import PulmoSNN, SumPool2d
from neuro.neurons import LIF

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class GraphFileError(ValueError):
    """A NIR file that cannot be read or does not describe a runnable graph."""


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32, copy=True)


def _lif_node(layer: LIF) -> nir.LIF:
    return nir.LIF(
        tau=_array(layer.tau), r=_array(layer.r), v_leak=_array(layer.v_leak),
        v_threshold=_array(layer.v_threshold), v_reset=_array(layer.v_reset),
    )


def model_to_nir(model: PulmoSNN) -> nir.NIRGraph:
    """Return the NIR graph of ``model``: one node per layer, named after the layer."""
    input_shape = model.input_shape()
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    shape = input_shape
    for name in model.LAYER_ORDER:
        layer = getattr(model, name)
        if isinstance(layer, torch.nn.Conv2d):
            node = nir.Conv2d(
                input_shape=tuple(shape[1:]), weight=_array(layer.weight),
                stride=tuple(layer.stride), padding=tuple(layer.padding),
                dilation=tuple(layer.dilation), groups=layer.groups, bias=_array(layer.bias),
            )
        elif isinstance(layer, LIF):
            node = _lif_node(layer)
        elif isinstance(layer, SumPool2d):
            k = layer.kernel_size
            node = nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))
        elif isinstance(layer, torch.nn.Flatten):
            # NIR shapes have no batch dimension, so PyTorch's start_dim=1 is NIR's 0.
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
        elif isinstance(layer, torch.nn.Linear):
            node = nir.Affine(weight=_array(layer.weight), bias=_array(layer.bias))
        else:
            raise TypeError(f"layer {name!r} of type {type(layer).__name__} has no NIR mapping")
        nodes[name] = node
        shape = node_output_shape(node, shape)

    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    names = ["input", *model.LAYER_ORDER, "output"]
    edges = list(zip(names[:-1], names[1:]))
    metadata = {"pulmofusion_format": FORMAT_VERSION, "dt": float(model.config.dt), "producer": "pulmofusion"}
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)
    infer_shapes(graph)  # raises if the layers do not fit together
    return graph


def write_graph(graph: nir.NIRGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` to ``path`` atomically; the folder must exist and be writable."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GraphFileError(f"cannot write NIR file {path}: folder {folder} does not exist; create it first")
    return atomic_write(path, lambda temporary: nir.write(temporary, graph))


# A hostile file could declare arrays far larger than any SNN; refuse before loading them.
MAX_ARRAY_ELEMENTS = 2**26


def _metadata_value(value):
    if isinstance(value, bytes):
        return value.decode("utf8", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_hdf5_sizes(path: Path) -> None:
    total = 0

    def visit(name, obj):
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(np.prod(obj.shape, dtype=np.int64)) if obj.shape else 1

    with h5py.File(path, "r") as handle:
        if "node" not in handle:
            raise GraphFileError(
                f"{path} is an HDF5 file but not a NIR graph (no 'node' group); write it with nir.write"
            )
        handle.visititems(visit)
    if total > MAX_ARRAY_ELEMENTS:
        raise GraphFileError(
            f"{path} declares {total} array elements, more than the limit of {MAX_ARRAY_ELEMENTS}; "
            "this is not a plausible SNN, check the file"
        )


_NEURON_POSITIVE = {nir.LIF: ("tau",), nir.CubaLIF: ("tau_mem", "tau_syn"), nir.LI: ("tau",)}


def _check_parameters(name: str, node: nir.NIRNode, shape: tuple[int, ...]) -> None:
    for field_name, value in vars(node).items():
        if field_name in ("input_type", "output_type", "metadata") or isinstance(value, (str, dict)):
            continue
        array = np.asarray(value)
        if array.dtype.kind in "fiub" and not np.isfinite(array.astype(np.float64)).all():
            raise GraphStructureError(f"node {name!r}: parameter {field_name} contains NaN or infinite values")
    for field_name in _NEURON_POSITIVE.get(type(node), ()):
        values = np.asarray(getattr(node, field_name), dtype=np.float64)
        if (values <= 0).any():
            raise GraphStructureError(
                f"node {name!r}: {field_name} must be > 0 seconds, found minimum {values.min()}"
            )
    if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
        for field_name in ("v_threshold", "r", "v_reset"):
            values = np.asarray(getattr(node, field_name))
            try:
                np.broadcast_to(values, shape)
            except ValueError:
                raise GraphStructureError(
                    f"node {name!r}: {field_name} has shape {values.shape}, which does not fit the "
                    f"layer shape {shape}"
                ) from None


def _check_metadata(path: Path, metadata: dict) -> None:
    dt = metadata.get("dt")
    if dt is not None:
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            dt = float("nan")
        if not (np.isfinite(dt) and dt > 0):
            raise GraphFileError(f"{path} stores dt = {metadata['dt']!r}; it must be a finite positive number of "
                                 "seconds. Fix the graph's metadata or pass --dt")
        metadata["dt"] = dt
    version = metadata.get("pulmofusion_format")
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, np.integer))):
        raise GraphFileError(f"{path} stores pulmofusion_format = {version!r}; it must be an integer version")


def read_graph(path: str | os.PathLike) -> tuple[nir.NIRGraph, dict]:
    """Read and check a NIR file; return the graph and its metadata (``dt`` may be absent).

    Raises ``GraphFileError`` for a missing, non-HDF5, oversized, malformed or
    inconsistent file, and for a file written by a newer version of this project.
    """
    path = Path(path)
    if path.is_dir():
        raise GraphFileError(f"{path} is a folder; pass the path of a NIR file to --graph")
    if not path.is_file():
        raise GraphFileError(f"NIR file {path} not found; check the path passed to --graph")
    if not h5py.is_hdf5(path):
        raise GraphFileError(f"{path} is not an HDF5 file; NIR graphs are HDF5 files written by nir.write")
    try:
        _check_hdf5_sizes(path)
        graph = nir.read(path, type_check=False)  # our own shape checks below name the node
    except GraphFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, AssertionError, IndexError,
            OverflowError, ZeroDivisionError, RuntimeError) as error:
        raise GraphFileError(
            f"{path} could not be read as a NIR graph ({type(error).__name__}: {error}); "
            "re-export it with nir.write from nir 1.0"
        ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise GraphFileError(f"{path} contains a single {type(graph).__name__} node, not a NIRGraph; wrap it in a graph")

    metadata = {key: _metadata_value(value) for key, value in (graph.metadata or {}).items()}
    _check_metadata(path, metadata)
    version = metadata.get("pulmofusion_format")
    if version is not None and int(version) > FORMAT_VERSION:
        raise GraphFileError(
            f"{path} uses PulmoFusion graph format {version}, newer than this version's {FORMAT_VERSION}; "
            "update the toolkit"
        )
    try:
        for name, node in graph.nodes.items():
            if isinstance(node, nir.NIRGraph):
                raise GraphStructureError(
                    f"node {name!r} is a nested NIRGraph (a subgraph); flatten it into the top-level graph"
                )
        shapes = infer_shapes(graph)
        for name, node in graph.nodes.items():
            _check_parameters(name, node, shapes[name])
        layout(graph)
    except GraphStructureError as error:
        raise GraphFileError(f"{path}: {error}") from None
    logger.info("read NIR graph %s with %d nodes", path, len(graph.nodes))
    return graph, metadata
