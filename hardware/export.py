"""Export the SNN as chip artefacts: NIR graph, lava-dl netx network and resource report.

``export_snn`` writes into ``out_dir``::

    graph.nir       the NIR graph (neuro.nir_io.write_graph), readable by every NIR platform
    network.net     the netx HDF5 network of lava-fixed's integer plan (hardware/netx_export.py)
    resources.json  neurons, synapses, synaptic memory and cores per chip limit (hardware/resources.py)
    resources.md    the same report as a Markdown table, with what to change if it does not fit

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

from cohort.files import atomic_write
from hardware.netx_export import NetxExport, export_netx
from neuro.nir_io import model_to_nir, read_graph, write_graph

logger = logging.getLogger(__name__)

GRAPH_FILE = "graph.nir"
NETX_FILE = "network.net"
RESOURCES_JSON = "resources.json"
RESOURCES_MARKDOWN = "resources.md"
EXPORT_FILES = (GRAPH_FILE, NETX_FILE, RESOURCES_JSON, RESOURCES_MARKDOWN)


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
               allow_oversize: bool = False, calibration=None) -> ExportResult:
    """Write the four artefacts of ``source`` into ``out_dir`` (created if missing).

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
            raise ExportError(f"the network does not fit {chip_name}: {advice}. Nothing was written; "
                              "pass --allow-oversize to export anyway")
        warnings.warn(f"the network does not fit {chip_name}: {advice}", stacklevel=2)
        notes.append(f"Does not fit {chip_name}: {advice}.")

    staging = _make_staging(out_dir, staging_folder)
    try:
        write_graph(source.graph, staging / GRAPH_FILE)
        netx = export_netx(source.graph, staging / NETX_FILE, dt=source.dt, num_steps=num_steps,
                           calibration=calibration)
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
                        dt=source.dt, num_steps=num_steps, notes=notes)
