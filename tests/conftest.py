"""Shared fixtures: the published NIR reference graph and a small default SNN."""

from __future__ import annotations

import numpy as np
import pytest
from nir_traces import REFERENCE_DIR

@pytest.fixture(scope="module")
def one_torch_thread():
    """Use one PyTorch thread for a module: on a 2-core machine two threads make small models slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def reference_graph():
    from neuro.nir_io import read_graph

    path = REFERENCE_DIR / "lif_norse.nir"
    if not path.is_file():
        pytest.skip(f"published NIR reference graph not found at {path}")
    graph, _ = read_graph(path)
    return graph


@pytest.fixture(scope="session")
def small_snn():
    """A small PulmoSNN (32x32 input) and its NIR graph."""
    from neuro.model import PulmoSNN, SNNConfig
    from neuro.nir_io import model_to_nir

    model = PulmoSNN(SNNConfig(input_size=32, conv_channels=(4, 8), hidden=16, seed=3))
    return model, model_to_nir(model)


@pytest.fixture(scope="session")
def small_spikes(small_snn):
    """Rate-coded spikes (12 steps, 3 clips) of simulated thermal clips for ``small_snn``."""
    from cohort.synthetic import generate_clips
    from neuro.encoding import RateEncoder

    clips = np.stack([clip.frames for clip in generate_clips(3, seed=5)])[:, :12]
    return RateEncoder(size=32, value_range=(20.0, 40.0), seed=1).encode(clips).astype(np.float64)
