"""Published NIR reference traces (the NIR paper's one-LIF-neuron graph on every platform)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO.parent / "shared" / "nir-reference" / "lif"
REFERENCE_DT = 1e-4  # the published traces were simulated with this step (the graph does not store it)


def reference_trace(platform: str) -> np.ndarray:
    """Return the (1000, 3) trace of ``platform``: input spike, voltage, output spike."""
    path = REFERENCE_DIR / f"lif_{platform}.csv"
    if not path.is_file():
        pytest.skip(f"published NIR reference traces not found at {REFERENCE_DIR}")
    return np.loadtxt(path, delimiter=",")


def spike_steps(column: np.ndarray) -> list[int]:
    """Return the indices of the steps where ``column`` contains a spike."""
    return [int(i) for i in np.nonzero(np.asarray(column).reshape(-1) > 0.5)[0]]
