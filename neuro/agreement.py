"""Layer-by-layer comparison of two runs of the same graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuro.backends.base import BackendRun


@dataclass(frozen=True)
class LayerAgreement:
    """Comparison of one layer's spikes with the reference.

    ``agreement`` is the fraction of (step, sample, neuron) entries that are equal.
    ``first_divergence`` is the earliest differing entry as (step, sample, neuron index
    into the layer's flattened shape), or None when the records are identical.
    """

    layer: str
    agreement: float
    differing: int
    entries: int
    first_divergence: tuple[int, int, int] | None

    @property
    def identical(self) -> bool:
        return self.differing == 0


def compare_layer(layer: str, reference: np.ndarray, candidate: np.ndarray) -> LayerAgreement:
    """Compare two spike records shaped (T, B, *shape)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"layer {layer!r}: records have shapes {reference.shape} and {candidate.shape}")
    steps, samples = reference.shape[:2]
    flat_ref = reference.reshape(steps, samples, -1)
    flat_candidate = candidate.reshape(steps, samples, -1)
    differs = flat_ref != flat_candidate
    differing = int(differs.sum())
    first = None
    if differing:
        step, sample, neuron = np.argwhere(differs)[0]  # argwhere is in C order, so step comes first
        first = (int(step), int(sample), int(neuron))
    entries = int(differs.size)
    return LayerAgreement(layer, 1.0 - differing / entries if entries else 1.0, differing, entries, first)


def compare_runs(reference: BackendRun, candidate: BackendRun) -> list[LayerAgreement]:
    """Compare every spiking layer of ``candidate`` with ``reference``, in the reference's order."""
    missing = sorted(set(reference.spikes) - set(candidate.spikes))
    if missing:
        raise ValueError(f"backend {candidate.backend!r} did not record layers {missing}")
    return [compare_layer(name, record, candidate.spikes[name]) for name, record in reference.spikes.items()]
