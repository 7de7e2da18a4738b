"""Export the SNN as chip artefacts: NIR graph, lava-dl netx network and resource report.

``export_snn`` writes into ``out_dir``::

    graph.nir       the NIR graph (neuro.nir_io.write_graph), readable by every NIR platform
    network.net     the netx HDF5 network of lava-fixed's integer plan (hardware/netx_export.py)
    resources.json  neurons, synapses, synaptic memory and cores per chip limit (hardware/resources.py)
    resources.md    the same report as a Markdown table, with what to change if it does not fit
    quantisation.json  the scale policy ("worst_case" or "calibrated"), the calibration clips
                    and settings, each layer's integer scale, and the overflow events that the
                    integer emulator found on the calibration input

Every file is first written into a temporary folder (inside ``out_dir`` if it exists,
else next to it) and moved into place only when all of them were written, so a failed
export leaves no partial file in ``out_dir``.  A network that does not fit the chosen chip stops the export
(``ExportError``) unless ``allow_oversize`` is set; then the files are written and a
warning names the limits it exceeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nir

import numpy as np

from cohort.files import atomic_write
from hardware.netx_export import NetxExport, export_netx
from neuro.backends.lava.calibration import Calibration, CalibrationConfig, calibrate
from neuro.graph import input_shape
from neuro.nir_io import model_to_nir, read_graph, write_graph

logger = logging.getLogger(__name__)

GRAPH_FILE = "graph.nir"
NETX_FILE = "network.net"
RESOURCES_JSON = "resources.json"
RESOURCES_MARKDOWN = "resources.md"
QUANTISATION_JSON = "quantisation.json"
EXPORT_FILES = (GRAPH_FILE, NETX_FILE, RESOURCES_JSON, RESOURCES_MARKDOWN, QUANTISATION_JSON)


class ExportError(ValueError):
    """An export that cannot be written: bad destination, missing dt, or a network that does not fit."""


@dataclass
class ExportSource:
    """The graph to export, its time step ``dt`` in seconds, and where it came from."""

    graph: nir.NIRGraph
    dt: float
    origin: str


@dataclass
class ExportResult:
    """Files written by ``export_snn`` and what they contain."""

    out_dir: Path
    files: dict[str, Path]
    netx: NetxExport
    resources: object
    chip: str
    dt: float
    num_steps: int
    quantisation: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_source(*, checkpoint: str | os.PathLike | None = None, graph: str | os.PathLike | None = None,
                dt: float | None = None) -> ExportSource:
    """Return the graph of a checkpoint, of a NIR file, or of an untrained default PulmoSNN.

    ``dt`` overrides the step stored with the model or graph (with a warning when they
    differ).  Raises ``CheckpointError`` or ``GraphFileError`` for a bad file, and
    ExportError when both sources are given or a NIR file stores no dt and none is given.
    """
    if checkpoint is not None and graph is not None:
        raise ExportError("pass either --checkpoint or --graph, not both")
    if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ExportError(f"--dt must be a finite number of seconds > 0, got {dt!r}")

    if graph is not None:
        nir_graph, metadata = read_graph(graph)
        stored, origin = metadata.get("dt"), f"NIR file {graph}"
    else:
        from neuro.checkpoint import load_snn
        from neuro.model import PulmoSNN

        model = load_snn(checkpoint) if checkpoint is not None else PulmoSNN()
        nir_graph = model_to_nir(model)
        stored = model.config.dt
        origin = f"checkpoint {checkpoint}" if checkpoint is not None else "untrained default PulmoSNN (seed 0)"

    if dt is None and stored is None:
        raise ExportError(f"{origin} stores no dt; pass the time step in seconds with --dt")
    if dt is not None and stored is not None and not math.isclose(dt, stored, rel_tol=1e-9):
        warnings.warn(
            f"--dt {dt:g} s differs from the {stored:g} s that {origin} was written for; its neurons decay "
            f"differently per step at the new dt", stacklevel=2,
        )
    return ExportSource(nir_graph, float(dt if dt is not None else stored), origin)


@dataclass
class ExportCalibration:
    """Calibrated scales for an export: the ``Calibration`` and the spikes ``(T, B, *input_shape)`` it saw.

    ``export_snn`` reruns the integer network on ``spikes`` to report overflow events.
    """

    calibration: Calibration
    spikes: np.ndarray
    description: str

    @property
    def clips(self) -> int:
        return int(self.spikes.shape[1])


def calibrate_source(source: ExportSource, *, clips: int, num_steps: int, seed: int = 0,
                     percentile: float = 100.0, headroom: float = 1.25) -> ExportCalibration:
    """Calibrate ``source`` on ``clips`` simulated thermal clips of ``num_steps`` steps (cohort and encoder ``seed``).

    The clips and their rate code are those of ``benchmarks/fixed_point.py``
    (``hardware.calibration_input``).  Raises ExportError for an invalid count,
    percentile or headroom, and WorkloadError for a graph whose input is not one
    square image channel.
    """
    from hardware.calibration_input import simulated_calibration_spikes

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ExportError(f"--calibration-clips must be an integer >= 1 to calibrate, got {clips!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ExportError(f"--steps must be an integer >= 1, got {num_steps!r}")
    try:
        config = CalibrationConfig(percentile=percentile, headroom=headroom)
    except ValueError as error:
        raise ExportError(f"invalid calibration option (--percentile {percentile!r}, --headroom {headroom!r}): "
                          f"{error}") from None
    calibration_input = simulated_calibration_spikes(clips, input_shape=input_shape(source.graph),
                                                     steps=num_steps, seed=seed)
    calibration = calibrate(source.graph, calibration_input.spikes, source.dt, config)
    return ExportCalibration(calibration, calibration_input.spikes, calibration_input.description)


def _range(values) -> list[float] | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    return [float(array.min()), float(array.max())]


def quantisation_record(plan, calibrated: ExportCalibration | None, overflow=None) -> dict:
    """Return the content of quantisation.json for ``lava-fixed``'s ``plan`` of the exported graph.

    ``layers`` maps each neuron layer to its ``scale`` (integer units per Lava float unit,
    the minimum of ``row_scales`` where rows have their own scale), ``row_scales`` as
    [min, max] or None, ``weight_exp`` and the threshold range ``vth`` as [min, max].
    ``overflow`` is the ``OverflowReport`` of the plan on the calibration spikes, or None.
    """
    record = {"policy": plan.policy, "calibration_clips": 0, "calibration": None, "layers": {}, "overflow": None}
    for name, layer in plan.quantisation.items():
        record["layers"][name] = {"scale": float(layer.scale), "row_scales": _range(layer.row_scales),
                                  "weight_exp": int(layer.weight_exp), "vth": _range(layer.vth)}
    if calibrated is not None:
        config = calibrated.calibration.config
        record["calibration_clips"] = calibrated.clips
        record["calibration"] = {
            "input": calibrated.description, "steps": int(calibrated.spikes.shape[0]),
            "percentile": config.percentile, "headroom": config.headroom,
            "fill_weight_grid": config.fill_weight_grid, "per_row_scales": config.per_row_scales,
            "balanced_rounding": config.balanced_rounding,
            "summary": calibrated.calibration.summary().splitlines(),
        }
    if overflow is not None:
        record["overflow"] = {"total": overflow.total,
                              "events": [vars(event) | {"first": event.first} for event in overflow.occurred()]}
    return record


def _check_overflow(plan, calibrated: ExportCalibration):
    """Emulate ``plan`` on the calibration spikes, warn about any wrap or saturation, and return the report."""
    from neuro.backends.lava.integer_model import emulate

    report = emulate(plan, calibrated.spikes).overflow
    events = report.occurred()
    if events:
        warnings.warn(
            f"the calibrated integer network has {report.total} overflow events on its {calibrated.clips} "
            f"calibration clips: " + "; ".join(event.summary() for event in events)
            + ". Raise --headroom, calibrate on more clips or use the worst-case scales (--calibration-clips 0)",
            RuntimeWarning, stacklevel=3,
        )
    return report


def _chip_limits(chip):
    from hardware.resources import CHIPS

    if not isinstance(chip, str):
        return chip
    if chip not in CHIPS:
        raise ExportError(f"unknown chip {chip!r}; choose from {', '.join(sorted(CHIPS))}")
    return CHIPS[chip]


def _staging_folder(out_dir: Path) -> Path:
    """Return the writable folder to stage the files in: ``out_dir`` if it exists, else its parent.

    Staging in the same file system as ``out_dir`` makes the final renames atomic.
    """
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"cannot export to {out_dir}: it is a file, not a folder; choose another --out")
    if parent.exists() and not parent.is_dir():
        raise ExportError(f"cannot export to {out_dir}: {parent} is a file, not a folder; choose another --out")
    if not parent.is_dir():
        raise ExportError(f"cannot export to {out_dir}: its parent folder {parent} does not exist; create it first")
    folder = out_dir if out_dir.is_dir() else parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ExportError(f"cannot export to {out_dir}: folder {folder} is not writable; "
                          "choose another --out or change its permissions")
    return folder


def _make_staging(out_dir: Path, folder: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=folder))
    except OSError as error:
        raise ExportError(f"cannot export to {out_dir}: folder {folder} is not writable "
                          f"({error.strerror or error}); choose another --out or change its permissions") from None


def _publish(staging: Path, out_dir: Path) -> dict[str, Path]:
    """Move the finished files from ``staging`` into ``out_dir``, each with an atomic rename."""
    if not out_dir.exists():
        # mkdtemp makes the folder private to its owner; give it the usual umask mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        os.rename(staging, out_dir)
        return {name: out_dir / name for name in EXPORT_FILES}
    files = {}
    for name in EXPORT_FILES:
        os.replace(staging / name, out_dir / name)
        files[name] = out_dir / name
    staging.rmdir()
    return files


def export_snn(out_dir: str | os.PathLike, source: ExportSource, *, num_steps: int = 30, chip="loihi2",
               allow_oversize: bool = False, calibration: ExportCalibration | None = None) -> ExportResult:
    """Write the five artefacts of ``source`` into ``out_dir`` (created if missing).

    ``calibration`` (from ``calibrate_source``) selects the calibrated scales, and the
    integer network is then emulated on its spikes.  Each overflow event found there is
    named in a RuntimeWarning and stored in quantisation.json.  None keeps the
    worst-case scales.

    ``num_steps`` is the number of input time steps per sample; the netx network's reset
    interval is that plus the network's pipeline delay.  ``chip`` names an entry of
    ``hardware.resources.CHIPS`` or is a ``ChipLimits``.  Raises ExportError for a
    destination that cannot be written or a network that does not fit (unless
    ``allow_oversize``), NotImplementedError for a node netx cannot express, and the
    Lava backend's ``LavaMappingError`` for parameters Lava cannot express.  On any
    error ``out_dir`` gains no file.
    """
    from hardware.resources import resource_report

    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ExportError(f"--steps must be an integer >= 1, got {num_steps!r}")
    out_dir = Path(out_dir)
    staging_folder = _staging_folder(out_dir)
    limits = _chip_limits(chip)

    report = resource_report(source.graph, chip=limits)
    chip_name = getattr(limits, "name", str(chip))
    notes = []
    if not report.fits:
        advice = "; ".join(report.advice) or "reduce the network"
        if not allow_oversize:
            raise ExportError(f"the network does not fit {chip_name}: {advice.rstrip('.')}. Nothing was written; "
                              "pass --allow-oversize to export anyway")
        warnings.warn(f"the network does not fit {chip_name}: {advice}", stacklevel=2)
        notes.append(f"Does not fit {chip_name}: {advice}.")

    staging = _make_staging(out_dir, staging_folder)
    try:
        write_graph(source.graph, staging / GRAPH_FILE)
        netx = export_netx(source.graph, staging / NETX_FILE, dt=source.dt, num_steps=num_steps,
                           calibration=None if calibration is None else calibration.calibration)
        overflow = None if calibration is None else _check_overflow(netx.plan, calibration)
        quantisation = quantisation_record(netx.plan, calibration, overflow)
        atomic_write(staging / QUANTISATION_JSON,
                     lambda path: Path(path).write_text(json.dumps(quantisation, indent=2) + "\n"))
        atomic_write(staging / RESOURCES_JSON,
                     lambda path: Path(path).write_text(json.dumps(report.to_dict(), indent=2) + "\n"))
        atomic_write(staging / RESOURCES_MARKDOWN, lambda path: Path(path).write_text(report.markdown() + "\n"))
        files = _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    notes += [adjustment.sentence() for adjustment in netx.adjustments]
    netx.path = files[NETX_FILE]
    logger.info("exported %s to %s", source.origin, out_dir)
    return ExportResult(out_dir=out_dir, files=files, netx=netx, resources=report, chip=chip_name,
                        dt=source.dt, num_steps=num_steps, quantisation=quantisation, notes=notes)
