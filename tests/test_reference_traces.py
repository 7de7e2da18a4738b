"""Each backend runs the NIR paper's one-neuron graph and fires at its platform's published steps."""

from __future__ import annotations

import pytest
from nir_traces import REFERENCE_DT, reference_trace, spike_steps

from neuro.backends import create_backend

# Backend -> the published platform trace it must reproduce (on the graph's time base).
PLATFORM_OF = {"reference": "exact", "snntorch": "snntorch", "norse": "norse"}


@pytest.mark.parametrize("backend_name", sorted(PLATFORM_OF))
def test_torch_backends_fire_at_published_steps(backend_name, reference_graph):
    trace = reference_trace(PLATFORM_OF[backend_name])
    run = create_backend(backend_name).run(reference_graph, trace[:, 0].reshape(-1, 1, 1), REFERENCE_DT)
    assert spike_steps(run.output) == spike_steps(trace[:, 2])


def test_published_platforms_agree_without_lava_delay():
    exact = spike_steps(reference_trace("exact")[:, 2])
    assert exact == [460, 510, 710, 760]
    for platform in ("norse", "snntorch", "spinnaker2"):
        assert spike_steps(reference_trace(platform)[:, 2]) == exact
    for platform in ("lava_cpu_float", "lava_cpu_fixed", "lava_loihi_fixed"):
        assert spike_steps(reference_trace(platform)[:, 2]) == [step + 1 for step in exact]


def test_reference_voltage_matches_exact_trace_shape(reference_graph):
    trace = reference_trace("norse")
    run = create_backend("reference").run(reference_graph, trace[:, 0].reshape(-1, 1, 1), REFERENCE_DT,
                                          record_voltage=True)
    voltage = run.voltages["1"] if "1" in run.voltages else next(iter(run.voltages.values()))
    # Norse published the same forward-Euler voltage; ours must match it to float32 precision.
    assert abs(voltage.reshape(-1) - trace[:, 1]).max() < 1e-6
