"""The PulmoFusion SNN gives identical spikes in every layer on every float backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuro.agreement import compare_runs
from neuro.backends import create_backend


@pytest.fixture(scope="module")
def reference_run(small_snn, small_spikes):
    _, graph = small_snn
    return create_backend("reference").run(graph, small_spikes, 1e-3)


def test_reference_matches_model_forward(small_snn, small_spikes, reference_run):
    model, _ = small_snn
    model = model.double()
    with torch.no_grad():
        output, records = model(torch.as_tensor(small_spikes), record=True)
    for name, record in reference_run.spikes.items():
        assert np.array_equal(record, records[name].numpy()), name
    assert np.array_equal(reference_run.output, output.numpy())


def test_reference_run_has_activity_in_every_layer(reference_run):
    for name, record in reference_run.spikes.items():
        assert record.sum() > 0, f"layer {name} never spiked; the test would not catch a difference"


@pytest.mark.parametrize("backend_name", ["snntorch", "norse"])
def test_torch_backends_identical_per_layer(backend_name, small_snn, small_spikes, reference_run):
    _, graph = small_snn
    run = create_backend(backend_name).run(graph, small_spikes, 1e-3)
    for layer in compare_runs(reference_run, run):
        assert layer.differing == 0, f"{backend_name} {layer.layer} first differs at {layer.first_divergence}"
    assert np.array_equal(run.output, reference_run.output)


@pytest.mark.parametrize("backend_name", ["snntorch", "norse"])
def test_backends_report_their_corrections(backend_name, small_snn, small_spikes):
    _, graph = small_snn
    run = create_backend(backend_name).run(graph, small_spikes[:2], 1e-3)
    text = " ".join(run.notes)
    assert "Flatten" in text
    assert "LIF" in text


def test_pooling_neuron_is_spike_max_pool(small_snn, reference_run):
    model, _ = small_snn
    lif1 = torch.as_tensor(reference_run.spikes["lif1"])
    steps, batch = lif1.shape[:2]
    pooled = torch.nn.functional.max_pool2d(lif1.reshape(steps * batch, *lif1.shape[2:]), 2)
    assert np.array_equal(pooled.reshape(steps, batch, *pooled.shape[1:]).numpy(),
                          reference_run.spikes["pool1_lif"])


def test_dt_is_used_not_assumed(reference_graph):
    # One input spike through weight 1 raises v by dt/tau * r = 0.04 at dt = 1e-4 s and by
    # 0.4 at dt = 1e-3 s; only the latter crosses the threshold of 0.1.
    spikes = np.zeros((3, 1, 1))
    spikes[1] = 1.0
    for name in ("reference", "snntorch", "norse"):
        small_dt = create_backend(name).run(reference_graph, spikes, 1e-4)
        large_dt = create_backend(name).run(reference_graph, spikes, 1e-3)
        assert small_dt.output.sum() == 0, name
        assert large_dt.output[:, 0, 0].tolist() == [0.0, 1.0, 0.0], name
