"""Create and run the Lava processes of a ``NetworkPlan``.

One network runs several samples back to back.  The input RingBuffer contains the
samples one after another, each followed by zero steps, and every LIFReset zeroes its
state at the first step of each sample's window (see ``plan.py``).

Records stream out through ``lava.proc.io.extractor.Extractor`` processes, which pass
whole arrays to this process over shared memory.  Lava's own recorders
(``lava.proc.io.sink.RingBuffer`` and ``lava.proc.monitor.process.Monitor``) keep the
record in a Var, and ``Var.get`` sends one element per message in lava-nc 0.10.  That
took 44 s for the 2.2 million spike values of the project's default network (T = 30,
B = 4), about 17 us per value on a 2-core machine, while the Extractors deliver the same
records in under 0.1 s.  Voltages are Vars, so recording them swaps each LIFReset for
``LIFResetWithVoltage``, which also sends ``v`` on a port.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
from lava.proc.io.source import RingBuffer as SourceRingBuffer
from lava.proc.lif.process import LIFReset

from neuro.backends.lava.plan import FlattenPlan, NetworkPlan, NeuronPlan, SynapsePlan, lava_shape
from neuro.backends.lava.voltage.process import LIFResetWithVoltage

logger = logging.getLogger(__name__)

FLOAT_TAG = "floating_pt"
FIXED_TAG = "fixed_pt"
# Shared memory that the Extractors' buffers may use at once; the run pauses to drain
# them whenever they are full.
EXTRACTOR_BUFFER_BYTES = 32 * 2**20


@dataclass
class LavaNetwork:
    """The processes of one plan, ready to run ``num_steps`` steps.

    ``ports`` maps each node name to the (possibly virtual) OutPort carrying its output;
    the ``*_extractors`` receive the spike, output and voltage records.
    """

    plan: NetworkPlan
    num_steps: int
    source: SourceRingBuffer
    ports: dict = field(default_factory=dict)
    processes: dict[str, AbstractProcess] = field(default_factory=dict)
    spike_extractors: dict[str, Extractor] = field(default_factory=dict)
    output_extractor: Extractor | None = None
    voltage_extractors: dict[str, Extractor] = field(default_factory=dict)
    steps_per_block: int = 1


@dataclass
class RawRecords:
    """Records of one network run, ``(num_steps, *NIR shape)`` each, on Lava's time base."""

    spikes: dict[str, np.ndarray]
    output: np.ndarray
    voltages: dict[str, np.ndarray]


def _to_nir_layout(frames: list[np.ndarray]) -> np.ndarray:
    """Stack per-step Lava arrays into ``(steps, *NIR shape)``."""
    record = np.stack(frames)
    return record.transpose(0, 3, 2, 1) if record.ndim == 4 else record


def _build_synapse(step: SynapsePlan, fixed: bool) -> AbstractProcess:
    if step.process is Dense:
        extra = {"weight_exp": step.weight_exp, "num_weight_bits": 8} if fixed else {}
        return Dense(weights=step.weight, num_message_bits=step.num_message_bits, name=step.name, **extra)
    return Conv(
        weight=step.weight, weight_exp=step.weight_exp, input_shape=step.input_shape,
        num_message_bits=step.num_message_bits, name=step.name, **step.conv_arguments,
    )


def _build_neuron(step: NeuronPlan, period: int, record_voltage: bool) -> LIFReset:
    process_class = LIFResetWithVoltage if record_voltage else LIFReset
    return process_class(
        shape=step.shape, du=step.du, dv=step.dv, vth=step.vth, bias_mant=step.bias_mant,
        bias_exp=step.bias_exp, reset_interval=period, reset_offset=step.reset_offset, name=step.name,
    )


def _flatten_port(port, step: FlattenPlan):
    """Return a virtual port that reorders ``port`` into NIR C-order and reshapes it."""
    if len(step.input_shape) == 3:
        port = port.transpose([2, 1, 0])
    port = port.reshape(step.output_shape)
    if len(step.output_shape) == 3:
        port = port.transpose([2, 1, 0])
    return port


def _steps_per_block(plan: NetworkPlan, num_steps: int, record_voltage: bool) -> int:
    recorded = list(plan.spiking) * (2 if record_voltage else 1)
    if plan.output_source not in plan.spiking:
        recorded.append(plan.output_source)
    bytes_per_step = 8 * sum(int(np.prod(plan.values[name].shape)) for name in recorded)
    return int(max(1, min(num_steps, EXTRACTOR_BUFFER_BYTES // max(bytes_per_step, 1))))


def build_network(plan: NetworkPlan, input_data: np.ndarray, *, record_voltage: bool) -> LavaNetwork:
    """Create every process of ``plan``, fed by ``input_data`` shaped ``(*Lava input shape, steps)``."""
    num_steps = int(input_data.shape[-1])
    source = SourceRingBuffer(data=input_data)
    block = _steps_per_block(plan, num_steps, record_voltage)
    network = LavaNetwork(plan=plan, num_steps=num_steps, source=source, steps_per_block=block)
    network.ports[plan.input_name] = source.s_out

    for step in plan.steps:
        if isinstance(step, FlattenPlan):
            network.ports[step.name] = _flatten_port(network.ports[step.source], step)
            continue
        if isinstance(step, SynapsePlan):
            process = _build_synapse(step, plan.fixed_point)
            in_port, out_port = process.s_in, process.a_out
        else:
            process = _build_neuron(step, plan.period, record_voltage)
            in_port, out_port = process.a_in, process.s_out
            if step.current_bias is not None:
                # A one-column RingBuffer repeats the CubaLIF's synaptic bias into u every step.
                constant = SourceRingBuffer(data=step.current_bias[..., None])
                constant.s_out.connect(process.a_in)
            if record_voltage:
                extractor = Extractor(shape=step.shape, buffer_size=block)
                process.v_out.connect(extractor.in_port)
                network.voltage_extractors[step.name] = extractor
        for source_name in step.sources:
            network.ports[source_name].connect(in_port)
        network.ports[step.name] = out_port
        network.processes[step.name] = process

    for name in plan.spiking:
        extractor = Extractor(shape=lava_shape(plan.values[name].shape), buffer_size=block)
        network.processes[name].s_out.connect(extractor.in_port)
        network.spike_extractors[name] = extractor
    if plan.output_source not in plan.spiking:
        extractor = Extractor(shape=lava_shape(plan.values[plan.output_source].shape), buffer_size=block)
        network.ports[plan.output_source].connect(extractor.in_port)
        network.output_extractor = extractor
    return network


def run_network(network: LavaNetwork) -> RawRecords:
    """Run ``network`` for its ``num_steps`` steps, receive every record and stop the runtime.

    The run goes in blocks of ``steps_per_block`` steps; after each block every
    Extractor holds exactly that many arrays, which are received before the next block.
    """
    plan = network.plan
    extractors = dict(network.spike_extractors)
    if network.output_extractor is not None:
        extractors["\0output"] = network.output_extractor
    extractors.update({f"\0v:{name}": extractor for name, extractor in network.voltage_extractors.items()})
    frames: dict[str, list[np.ndarray]] = {key: [] for key in extractors}
    run_config = Loihi2SimCfg(
        select_tag=FIXED_TAG if plan.fixed_point else FLOAT_TAG,
        exception_proc_model_map={Extractor: PyLoihiExtractorModel},
    )
    try:
        done = 0
        while done < network.num_steps:
            block = min(network.steps_per_block, network.num_steps - done)
            network.source.run(condition=RunSteps(num_steps=block), run_cfg=run_config)
            for key, extractor in extractors.items():
                frames[key].extend(extractor.receive() for _ in range(block))
            done += block
    finally:
        network.source.stop()

    spikes = {name: _to_nir_layout(frames[name]) for name in network.spike_extractors}
    output = _to_nir_layout(frames["\0output"]) if network.output_extractor is not None \
        else spikes[plan.output_source]
    voltages = {name: _to_nir_layout(frames[f"\0v:{name}"]) for name in network.voltage_extractors}
    return RawRecords(spikes=spikes, output=output, voltages=voltages)
