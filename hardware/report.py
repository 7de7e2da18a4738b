"""The backend comparison's report: a text table, JSON, Markdown and PNG plots.

Every number here comes from the measurements handed to ``Report.build``; nothing is
typed in.  Per-clip figures divide a whole batch's count or time by its clip count.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hardware.energy import energy_table_markdown, estimate_energy
from hardware.workload import BackendMeasurement, CnnMeasurement, Workload
from cohort.files import atomic_write
from neuro.nir_io import write_graph

MB = 1024 * 1024
_VERSIONED_PACKAGES = ("torch", "numpy", "nir", "snntorch", "norse", "lava-nc", "pytorchvideo", "neurobench")


def run_details(repeats: int, seed: int | None) -> dict:
    """Return what a reader needs to reproduce the run: machine, library versions, seed, repeats."""
    import importlib.metadata
    import os
    import platform
    from datetime import datetime, timezone

    versions = {}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "versions": versions,
        "seed": seed,
        "latency_repeats": repeats,
    }


@dataclass
class Report:
    """Everything one comparison run measured."""

    workload: Workload
    reference: BackendMeasurement
    backends: list[BackendMeasurement]
    cnn: CnnMeasurement | None
    energy_table: dict
    energy: dict[str, object] = field(default_factory=dict)
    run_details: dict = field(default_factory=dict)

    @classmethod
    def build(cls, workload: Workload, reference: BackendMeasurement, backends: list[BackendMeasurement],
              cnn: CnnMeasurement | None, energy_table: dict, *, repeats: int, seed: int | None) -> "Report":
        """Combine the measurements, estimate energy per backend and record the run's details."""
        report = cls(workload, reference, backends, cnn, energy_table, run_details=run_details(repeats, seed))
        macs = cnn.macs_per_clip if cnn else 0
        for measurement in backends:
            counts = measurement.counts
            report.energy[measurement.name] = estimate_energy(
                energy_table,
                synaptic_operations=counts.per_sample(counts.total_synaptic_operations),
                neuron_updates=counts.per_sample(counts.total_neuron_updates),
                macs=macs,
            )
        return report

    @property
    def samples(self) -> int:
        return int(self.workload.spikes.shape[1])

    @property
    def steps(self) -> int:
        return int(self.workload.spikes.shape[0])

    # ------------------------------------------------------------------ rows

    def backend_rows(self) -> list[dict]:
        rows = []
        for m in self.backends:
            counts = m.counts
            per_clip = self.samples
            # A graph without spiking layers is judged by its output alone.
            identical = all(layer.identical for layer in m.agreement) and m.output_agreement == 1.0
            lowest = min([layer.agreement for layer in m.agreement] + [m.output_agreement])
            rows.append({
                "backend": m.name,
                "spikes_identical": identical,
                "output_agreement": m.output_agreement,
                "min_layer_agreement": lowest,
                "first_divergence": _first_divergence(m),
                "layers": [{
                    "layer": a.layer, "agreement": a.agreement, "differing": a.differing,
                    "first_divergence": a.first_divergence,
                } for a in m.agreement],
                "classes": m.classes.tolist(),
                "spikes_per_clip": counts.per_sample(counts.total_spikes),
                "spikes_per_layer_per_clip": {layer.name: counts.per_sample(layer.spikes)
                                              for layer in counts.layers if layer.kind == "neuron"},
                "synaptic_operations_per_clip": counts.per_sample(counts.total_synaptic_operations),
                "synaptic_operations_per_layer_per_clip": {
                    layer.name: counts.per_sample(layer.synaptic_operations)
                    for layer in counts.layers if layer.kind == "synapse"},
                "graded_input_operations_per_clip": counts.per_sample(counts.graded_operations),
                "neuron_updates_per_clip": counts.per_sample(counts.total_neuron_updates),
                "activation_sparsity": counts.sparsity,
                "latency_per_clip_s": {
                    "median": m.latency.median_s / per_clip,
                    "iqr": m.latency.iqr_s / per_clip,
                    "min": m.latency.min_s / per_clip,
                    "max": m.latency.max_s / per_clip,
                    "repeats": len(m.latency.times_s),
                },
                "peak_memory_mb": m.peak_memory_bytes / MB,
                "memory_increase_mb": m.memory_increase_bytes / MB,
                "delays_steps": {k: v for k, v in m.run.delays.items() if v},
                "notes": m.run.notes + m.counts.uncounted,
                "accuracy": self._accuracy(m.classes),
            })
        return rows

    def _accuracy(self, classes: np.ndarray) -> float | None:
        """Return the share of clips classified as labelled; None without labels or training."""
        if self.workload.labels is None or not self.workload.trained:
            return None
        return float(np.mean(classes == self.workload.labels))

    def cnn_row(self) -> dict | None:
        if self.cnn is None:
            return None
        c = self.cnn
        return {
            "model": "X3D-S (pytorchvideo, untrained)",
            "input_shape": list(c.input_shape),
            "parameters": c.parameters,
            "macs_per_clip": c.macs_per_clip,
            "latency_per_clip_s": {"median": c.latency.median_s, "iqr": c.latency.iqr_s,
                                   "repeats": len(c.latency.times_s)},
            "peak_memory_mb": c.peak_memory_bytes / MB,
            "memory_increase_mb": c.memory_increase_bytes / MB,
            "operators_not_counted": c.uncounted_operators,
        }

    def to_dict(self) -> dict:
        return {
            "run": self.run_details,
            "workload": self.workload.description,
            "dt_s": self.workload.dt,
            "steps": self.steps,
            "clips": self.samples,
            "notes": self.workload.notes,
            "reference_backend": "reference (NIR meaning, forward Euler, float64 PyTorch)",
            "backends": self.backend_rows(),
            "cnn": self.cnn_row(),
            "energy_per_clip_pj": {name: asdict(estimate) for name, estimate in self.energy.items()},
            "energy_table": {key: asdict(entry) for key, entry in self.energy_table.items()},
        }

    # ------------------------------------------------------------------ text

    def table(self) -> str:
        from hardware.report_text import render_text

        return render_text(self)

    def markdown(self) -> str:
        from hardware.report_text import render_markdown

        return render_markdown(self, energy_table_markdown(self.energy_table))


def _first_divergence(measurement: BackendMeasurement) -> dict | None:
    for layer in measurement.agreement:
        if not layer.identical:
            return {"layer": layer.layer, "step_sample_neuron": layer.first_divergence}
    if measurement.output_agreement != 1.0:
        return {"layer": "output", "step_sample_neuron": None}
    return None


def write_report(report: Report, out: Path) -> list[Path]:
    """Write results.json, results.md, graph.nir and the PNG plots into ``out``; return the paths."""
    from hardware.plots import plot_layer_spikes, plot_rasters

    out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(report.to_dict(), indent=2, default=_json_default)
    paths = [
        atomic_write(out / "results.json", lambda p: Path(p).write_text(payload + "\n")),
        atomic_write(out / "results.md", lambda p: Path(p).write_text(report.markdown())),
        write_graph(_graph_with_run_dt(report.workload), out / "graph.nir"),
    ]
    paths += plot_rasters(report, out, atomic_write)
    paths += plot_layer_spikes(report, out, atomic_write)
    return paths


def _graph_with_run_dt(workload: Workload):
    """Return the workload's graph with the run's ``dt`` in its metadata, so a rerun matches."""
    graph = copy.copy(workload.graph)
    graph.metadata = {**(workload.graph.metadata or {}), "dt": float(workload.dt)}
    return graph


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
