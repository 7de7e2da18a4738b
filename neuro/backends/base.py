"""Common interface of the simulators that run a NIR graph.

Time base and semantics
-----------------------
Every backend runs a feed-forward NIR graph for ``T`` steps of length ``dt`` seconds
(NIR files do not store ``dt``, so it is always passed in).  The meaning of each node
is NIR's continuous-time equation discretised with forward Euler and an immediate
reset; for ``LIF`` that is::

    v[t] = v[t-1] + (dt / tau) * (v_leak - v[t-1] + r * I[t])
    z[t] = v[t] > v_threshold
    v[t] = v_reset            where z[t]

with ``v[0] = 0``.  ``neuro/backends/reference.py`` implements all supported node types
in that form; the other backends are compared with it layer by layer.

Within one step, snnTorch and Norse evaluate every node of the graph in topological
order, so a spike reaches the last layer in the step it was emitted.  Lava delays a
message by one step on every connection that goes through a synaptic process, so
its raw records lag.  A backend reports that lag per node in ``BackendRun.delays``
and returns records already shifted back onto the graph's time base.

Tensor layout
-------------
Inputs and records are NumPy arrays shaped ``(T, B, *shape)``: time first, then the
batch, then the node's NIR shape (``(C, H, W)`` for convolutional nodes, ``(N,)``
after a flatten).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import nir
import numpy as np


class UnsupportedNodeError(NotImplementedError):
    """A NIR node type that a backend cannot run."""

    def __init__(self, backend: str, node_name: str, node: nir.NIRNode, supported: list[str]):
        self.backend = backend
        self.node_name = node_name
        self.node_type = type(node).__name__
        message = (
            f"backend '{backend}' cannot run node '{node_name}' of type {self.node_type}; "
            f"it supports {', '.join(sorted(supported))}. "
            f"Remove or replace that node, or run with --backends set to the others."
        )
        super().__init__(message)


class BackendMappingError(ValueError):
    """A node whose type a backend supports but whose parameters it cannot express."""


@dataclass
class BackendRun:
    """Records of one backend's run over one batch of input spikes.

    ``spikes`` maps the name of every spiking node (LIF, IF, CubaLIF, ...) to its output
    spikes, ``(T, B, *shape)`` of 0/1 float values, on the graph's time base.
    ``output`` is the graph's output node values, ``(T, B, *shape)``.
    ``voltages`` contains membrane traces ``(T, B, *shape)`` per spiking node when the run
    was asked to record them (units of the backend; fixed point gives integers).
    ``delays`` is the number of steps each node's raw record lagged the graph's time
    base on this backend (0 everywhere for snnTorch and Norse).
    ``notes`` lists each difference between NIR's meaning and the library's that the
    backend corrected or could not correct, as sentences a user can read.
    """

    backend: str
    spikes: dict[str, np.ndarray]
    output: np.ndarray
    voltages: dict[str, np.ndarray] = field(default_factory=dict)
    delays: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def group_notes(notes: list[tuple[str, str]]) -> list[str]:
    """Merge (node name, note) pairs that share a note into one line naming every node."""
    nodes_by_note: dict[str, list[str]] = {}
    for node_name, note in notes:
        nodes_by_note.setdefault(note, []).append(node_name)
    return [f"{note} (nodes: {', '.join(names)})" for note, names in nodes_by_note.items()]


class Backend(abc.ABC):
    """A simulator that runs a NIR graph; subclasses set ``name`` and ``node_types``."""

    name: str = ""
    node_types: tuple[type, ...] = ()

    def check_supported(self, graph: nir.NIRGraph) -> None:
        """Raise ``UnsupportedNodeError`` for the first node this backend cannot run."""
        supported = [t.__name__ for t in self.node_types]
        for node_name, node in graph.nodes.items():
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            if not isinstance(node, self.node_types):
                raise UnsupportedNodeError(self.name, node_name, node, supported)

    def check(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float) -> None:
        """Raise the error ``run`` would raise for this graph, input and ``dt``, without running.

        The base class checks node types only.  A backend that can reject parameters or
        input (fixed-point ranges, say) overrides this, so callers can validate every
        backend before starting any of them.
        """
        self.check_supported(graph)

    @abc.abstractmethod
    def run(
        self,
        graph: nir.NIRGraph,
        spikes: np.ndarray,
        dt: float,
        *,
        record_voltage: bool = False,
    ) -> BackendRun:
        """Run ``graph`` on input ``spikes`` shaped ``(T, B, *input_shape)`` with step ``dt`` (s)."""
