"""``LavaBackend``: run a feed-forward NIR graph on lava-nc's CPU simulator.

Lava has no NIR reader, so ``plan.py`` maps each NIR node to Lava processes
(Affine/Linear -> Dense, Conv2d/SumPool2d/AvgPool2d -> Conv, LIF/IF/CubaLIF -> LIFReset,
Flatten -> a reshape of the port) and ``builder.py`` creates and runs them.

Time base: Dense and Conv send the result of the previous step, so a node's raw record
lags by the number of those processes between it and the input.  Each sample runs for
``T + max_lag`` steps (zeros after its input ends) and every record is shifted back by
its node's lag.  ``LavaRun.raw_spikes`` keeps the unshifted records.  Every neuron
zeroes its state at its first aligned step, so the steps before its input arrives
(where a bias alone would drive it) leave no trace.

A batch runs as one long Lava run, sample after sample, so the network is compiled
once per chunk of samples (one chunk unless the records would exceed
``max_record_bytes``).

In fixed point the scales come from worst-case bounds or, with ``calibration``, from
observed input (``calibration.py``).  After each fixed-point run the integer emulator
(``integer_model.py``) repeats the run to count the steps where ``u`` wrapped, ``v``
saturated or a Conv sum wrapped.  Lava does these silently, so each such event is
listed in ``LavaRun.overflow`` and the notes, and the run raises a RuntimeWarning.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field

import nir
import numpy as np

from neuro.backends.base import Backend, BackendRun
from neuro.backends.lava.builder import RawRecords, build_network, run_network
from neuro.backends.lava.calibration import Calibration
from neuro.backends.lava.fixed_point import LayerQuantisation
from neuro.backends.lava.integer_model import OverflowReport, emulate
from neuro.backends.lava.neurons import LavaMappingError
from neuro.backends.lava.plan import NetworkPlan, plan_network, to_lava_layout
from neuro.graph import input_shape

logger = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 256 * 2**20
# Loihi's synaptic input and neuron state registers are 24-bit signed; a larger input
# could not be represented on the chip and would wrap in Lava's bit-accurate models.
FIXED_INPUT_MAX = 2**23 - 1


# The worst-case policy bounds one step's input current, not the voltage summed over many
# steps; the calibrated policy sizes both from the calibration clips.
_OVERFLOW_ADVICE = {
    "worst_case": "The worst-case scales bound one step's input current but not the voltage summed over many steps; "
                  "calibrate the scales (calibration=...), which also sizes the voltage",
    "calibrated": "Calibrate on clips at least as strong as this input, or raise the headroom",
}


@dataclass
class LavaRun(BackendRun):
    """A ``BackendRun`` plus Lava's unshifted records and the fixed-point report.

    ``raw_spikes``, ``raw_output`` and ``raw_voltages`` are shaped ``(T + max_lag, B,
    *shape)`` on Lava's own time base: row ``i`` is Lava's time step ``i + 1`` of the
    sample.  ``quantisation`` is empty for lava-float.  ``overflow`` is the integer
    emulator's report (None for lava-float or with ``check_overflow=False``), and
    ``emulator_mismatch`` the number of raw spike entries where the emulator and
    Lava differ (0 when the emulator reproduced Lava bit for bit).
    """

    raw_spikes: dict[str, np.ndarray] = field(default_factory=dict)
    raw_output: np.ndarray | None = None
    raw_voltages: dict[str, np.ndarray] = field(default_factory=dict)
    quantisation: dict[str, LayerQuantisation] = field(default_factory=dict)
    policy: str | None = None
    overflow: OverflowReport | None = None
    emulator_mismatch: int = 0


class LavaBackend(Backend):
    """Run NIR graphs on Lava's floating-point (``lava-float``) or bit-accurate (``lava-fixed``) models."""

    node_types = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Flatten,
                  nir.LIF, nir.IF, nir.CubaLIF)

    def __init__(self, fixed_point: bool = False, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 calibration: Calibration | None = None, check_overflow: bool = True):
        """``calibration`` (fixed point only) selects the calibrated scales; ``check_overflow``
        runs the integer emulator after each fixed-point run to detect wrap-around and saturation."""
        if max_record_bytes <= 0:
            raise ValueError(f"max_record_bytes must be > 0, got {max_record_bytes}")
        if calibration is not None and not fixed_point:
            raise ValueError("calibration sets fixed-point scales; pass it with fixed_point=True")
        self.fixed_point = fixed_point
        self.name = "lava-fixed" if fixed_point else "lava-float"
        self.max_record_bytes = max_record_bytes
        self.calibration = calibration
        self.check_overflow = check_overflow
        self.last_quantisation: dict[str, LayerQuantisation] = {}
        self.last_plan: NetworkPlan | None = None

    def run(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float, *,
            record_voltage: bool = False) -> LavaRun:
        """Run ``graph`` on ``spikes`` shaped ``(T, B, *input_shape)`` with step ``dt`` seconds.

        Raises ``UnsupportedNodeError`` for a node type outside ``node_types`` and
        ``LavaMappingError`` for parameters that Lava cannot express.  In fixed point a
        graded (non 0/1) input sets the quantisation from the largest input value, so
        the integer parameters then depend on the batch.
        """
        plan, data = self._plan(graph, spikes, dt)
        num_steps, batch = data.shape[:2]
        self.last_plan = plan
        self.last_quantisation = dict(plan.quantisation)

        started = time.perf_counter()
        raw = self._run_chunks(plan, data, record_voltage)
        logger.info("%s ran %d samples x %d steps in %.2f s", self.name, batch, plan.period,
                    time.perf_counter() - started)
        run = self._assemble(plan, raw, num_steps)
        if plan.fixed_point and self.check_overflow:
            self._check_overflow(plan, data, run)
        return run

    def _check_overflow(self, plan: NetworkPlan, data: np.ndarray, run: LavaRun) -> None:
        """Emulate the run in integers, attach the overflow report and warn about any event."""
        started = time.perf_counter()
        emulated = emulate(plan, data)
        run.notes.append(f"The integer emulator's overflow check took {time.perf_counter() - started:.2f} s of "
                         f"this run's wall time; pass check_overflow=False to skip it.")
        run.overflow = emulated.overflow
        run.emulator_mismatch = sum(
            int(np.count_nonzero(emulated.raw_spikes[name] != record)) for name, record in run.raw_spikes.items()
        )
        if run.emulator_mismatch:
            message = (f"{self.name}: the integer emulator differs from Lava in {run.emulator_mismatch} raw spike "
                       f"entries, so the overflow report below may be incomplete")
            run.notes.append(message + ".")
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        events = emulated.overflow.occurred()
        if not events:
            run.notes.append(f"No u wrap, v saturation or Conv wrap occurred ({plan.policy} scales).")
            return
        run.notes += [f"Overflow: {event.summary()}." for event in events]
        warnings.warn(
            f"{self.name} ({plan.policy} scales): {emulated.overflow.total} wrap/saturation events, first "
            f"{events[0].summary()}; the fixed-point spikes differ from an unbounded integer run there. "
            f"{_OVERFLOW_ADVICE[plan.policy]}",
            RuntimeWarning, stacklevel=3,
        )

    def check(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float) -> None:
        """Plan the network without running it, raising what ``run`` would raise."""
        self._plan(graph, spikes, dt)

    def _plan(self, graph: nir.NIRGraph, spikes: np.ndarray, dt: float) -> tuple[NetworkPlan, np.ndarray]:
        self.check_supported(graph)
        if not (isinstance(dt, numbers.Real) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number of seconds > 0, got {dt!r}")
        data = self._check_input(graph, spikes)
        binary = bool(np.all((data == 0) | (data == 1)))
        bound = np.ones(data.shape[2:]) if binary else np.abs(data).max(axis=(0, 1))
        try:
            plan = plan_network(graph, float(dt), data.shape[0], fixed_point=self.fixed_point,
                                input_bound=bound, input_graded=not binary, calibration=self.calibration)
        except LavaMappingError as error:
            raise LavaMappingError(f"backend '{self.name}': {error}") from error
        return plan, data

    def _check_input(self, graph: nir.NIRGraph, spikes: np.ndarray) -> np.ndarray:
        data = np.asarray(spikes, dtype=np.float64)
        expected = input_shape(graph)
        if data.ndim != 2 + len(expected) or tuple(data.shape[2:]) != tuple(expected):
            raise ValueError(
                f"input spikes have shape {data.shape}; expected (T, B, {', '.join(map(str, expected))})"
            )
        if data.shape[0] < 1 or data.shape[1] < 1:
            raise ValueError(f"input spikes have shape {data.shape}; T and B must be at least 1")
        if not np.all(np.isfinite(data)):
            raise ValueError("input spikes contain non-finite values")
        if self.fixed_point and np.abs(data).max() > FIXED_INPUT_MAX:
            raise LavaMappingError(
                f"lava-fixed sends the input as integers of at most {FIXED_INPUT_MAX} in magnitude, but it contains "
                f"{np.abs(data).max():g}; scale the input down or use lava-float"
            )
        if self.fixed_point and not np.all(np.round(data) == data):
            raise LavaMappingError(
                "lava-fixed sends the input as integers, but it contains fractional values; "
                "pass 0/1 spikes (or integer counts) or use lava-float"
            )
        return data

    def _samples_per_chunk(self, plan: NetworkPlan, record_voltage: bool) -> int:
        sizes = [plan.values[plan.input_name].shape, plan.values[plan.output_source].shape]
        sizes += [plan.values[name].shape for name in plan.spiking] * (2 if record_voltage else 1)
        bytes_per_sample = plan.period * sum(int(np.prod(shape)) for shape in sizes) * 8
        return max(1, self.max_record_bytes // bytes_per_sample)

    def _run_chunks(self, plan: NetworkPlan, data: np.ndarray, record_voltage: bool) -> RawRecords:
        """Run the batch in chunks; return records shaped ``(period, B, *shape)``."""
        num_steps, batch = data.shape[:2]
        chunk = self._samples_per_chunk(plan, record_voltage)
        period = plan.period
        pieces: list[RawRecords] = []
        for start in range(0, batch, chunk):
            samples = data[:, start:start + chunk]
            count = samples.shape[1]
            timeline = np.zeros((period * count, *samples.shape[2:]))
            for index in range(count):
                timeline[index * period:index * period + num_steps] = samples[:, index]
            # Lava's RingBuffer wants (*Lava shape, time).
            lava_input = np.moveaxis(np.stack([to_lava_layout(frame) for frame in timeline]), 0, -1)
            network = build_network(plan, lava_input, record_voltage=record_voltage)
            records = run_network(network)
            pieces.append(_split_samples(records, count, period))
        return RawRecords(
            spikes={name: np.concatenate([p.spikes[name] for p in pieces], axis=1) for name in plan.spiking},
            output=np.concatenate([p.output for p in pieces], axis=1),
            voltages={name: np.concatenate([p.voltages[name] for p in pieces], axis=1)
                      for name in pieces[0].voltages},
        )

    def _assemble(self, plan: NetworkPlan, raw: RawRecords, num_steps: int) -> LavaRun:
        lags = {name: info.lag for name, info in plan.values.items()}
        lags[plan.output_name] = lags[plan.output_source]

        def aligned(record: np.ndarray, name: str) -> np.ndarray:
            return record[lags[name]:lags[name] + num_steps]

        raw_spikes = {name: (record != 0).astype(np.float64) for name, record in raw.spikes.items()}
        raw_output = raw.output.astype(np.float64)
        if plan.output_source in plan.spiking:
            raw_output = (raw_output != 0).astype(np.float64)
        else:
            raw_output = raw_output / plan.values[plan.output_source].scale
        raw_voltages = {}
        for name, record in raw.voltages.items():
            if plan.fixed_point:
                raw_voltages[name] = np.rint(record).astype(np.int64)
            else:
                factor = next(step.voltage_factor for step in plan.steps if step.name == name)
                raw_voltages[name] = record / factor

        max_lag = plan.max_lag
        notes = [
            f"Lava's Dense and Conv processes send the sum of the previous step, so each record lags the "
            f"graph's time base by the number of those processes between its node and the input "
            f"({max_lag} at most here), and every sample ran {num_steps} + {max_lag} steps before each "
            f"record was shifted back by its node's lag."
        ]
        notes += plan.notes
        if plan.fixed_point:
            notes += [f"Quantised {report.summary()}." for report in plan.quantisation.values()]
        return LavaRun(
            backend=self.name,
            spikes={name: aligned(record, name) for name, record in raw_spikes.items()},
            output=aligned(raw_output, plan.output_name),
            voltages={name: aligned(record, name) for name, record in raw_voltages.items()},
            delays={name: lag for name, lag in lags.items() if name != plan.input_name},
            notes=notes,
            raw_spikes=raw_spikes,
            raw_output=raw_output,
            raw_voltages=raw_voltages,
            quantisation=dict(plan.quantisation),
            policy=plan.policy if plan.fixed_point else None,
        )


def _split_samples(records: RawRecords, count: int, period: int) -> RawRecords:
    """Cut records of ``count`` back-to-back samples into ``(period, count, *shape)``."""

    def split(record: np.ndarray) -> np.ndarray:
        return np.swapaxes(record.reshape(count, period, *record.shape[1:]), 0, 1)

    return RawRecords(
        spikes={name: split(record) for name, record in records.spikes.items()},
        output=split(records.output),
        voltages={name: split(record) for name, record in records.voltages.items()},
    )
