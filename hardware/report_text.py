"""Text and Markdown renderings of the backend comparison report."""

from __future__ import annotations

from tabulate import tabulate


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".strip()
    return f"{value:.3g} {unit}".strip()


def _seconds(value: float) -> str:
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _joules(picojoules: float) -> str:
    for factor, unit in ((1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(picojoules) >= factor:
            return f"{picojoules / factor:.3g} {unit}"
    return f"{picojoules:.3g} pJ"


def _classes(classes: list[int]) -> str:
    separator = "" if max(classes, default=0) < 10 else " "
    return separator.join(str(c) for c in classes)


def _divergence(row: dict) -> str:
    first = row["first_divergence"]
    if first is None:
        return "-"
    if first["step_sample_neuron"] is None:
        return first["layer"]
    step, sample, neuron = first["step_sample_neuron"]
    return f"{first['layer']} t={step} b={sample} n={neuron}"


def _backend_table(report, fmt: str) -> str:
    headers = ["backend", "spikes = reference", "min layer agreement", "first divergence", "classes",
               "accuracy", "spikes/clip", "SOPs/clip", "neuron updates/clip", "sparsity",
               "latency/clip: median (IQR)", "peak memory (increase)"]
    no_accuracy = "n/a (untrained)" if report.workload.labels is not None else "n/a (no labels)"
    rows = []
    for row in report.backend_rows():
        latency = row["latency_per_clip_s"]
        rows.append([
            row["backend"], "yes" if row["spikes_identical"] else "NO",
            f"{100 * row['min_layer_agreement']:.3f} %", _divergence(row), _classes(row["classes"]),
            no_accuracy if row["accuracy"] is None else f"{100 * row['accuracy']:.1f} %",
            _si(row["spikes_per_clip"]), _si(row["synaptic_operations_per_clip"]),
            _si(row["neuron_updates_per_clip"]), f"{100 * row['activation_sparsity']:.1f} %",
            f"{_seconds(latency['median'])} ({_seconds(latency['iqr'])}, n={latency['repeats']})",
            f"{row['peak_memory_mb']:.0f} MB (+{row['memory_increase_mb']:.0f} MB)",
        ])
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _layer_table(report, fmt: str) -> str:
    rows_by_backend = report.backend_rows()
    layers = [a["layer"] for a in rows_by_backend[0]["layers"]] if rows_by_backend else []
    headers = ["layer", "neurons"] + [f"{row['backend']} agreement" for row in rows_by_backend] + \
              [f"{row['backend']} spikes/clip" for row in rows_by_backend]
    neurons = {layer.name: layer.neurons for layer in report.reference.counts.layers if layer.kind == "neuron"}
    rows = []
    for index, layer in enumerate(layers):
        agreement = [f"{100 * row['layers'][index]['agreement']:.3f} %" for row in rows_by_backend]
        spikes = [_si(row["spikes_per_layer_per_clip"][layer]) for row in rows_by_backend]
        rows.append([layer, neurons.get(layer, "")] + agreement + spikes)
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _cnn_table(report, fmt: str) -> str:
    cnn = report.cnn_row()
    if cnn is None:
        return "X3D-S CNN: skipped"
    latency = cnn["latency_per_clip_s"]
    rows = [[cnn["model"], "x".join(map(str, cnn["input_shape"])), _si(cnn["parameters"]),
             _si(cnn["macs_per_clip"]), f"{_seconds(latency['median'])} ({_seconds(latency['iqr'])}, "
             f"n={latency['repeats']})", f"{cnn['peak_memory_mb']:.0f} MB (+{cnn['memory_increase_mb']:.0f} MB)"]]
    return tabulate(rows, headers=["CNN", "input", "parameters", "MACs/clip", "latency/clip: median (IQR)",
                                   "peak memory (increase)"], tablefmt=fmt)


def _energy_table(report, fmt: str) -> str:
    rows = []
    for name, e in report.energy.items():
        rows.append([name, _joules(e.snn_45nm_fp32.picojoules), _joules(e.loihi_synaptic.picojoules),
                     _joules(e.loihi_total.picojoules),
                     _joules(e.cnn_45nm_fp32.picojoules) if report.cnn else "skipped",
                     _ratio(e.snn_to_cnn_fp32), _ratio(e.loihi_to_cnn_fp32)])
    headers = ["backend", "SNN 45 nm (SOPs x fp32 add)", "SNN Loihi (SOPs x E_SOP)", "SNN Loihi + neuron updates",
               "CNN 45 nm (MACs x fp32 MAC)", "SNN:CNN 45 nm", "SNN Loihi:CNN 45 nm"]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value <= 0:
        return "0"
    return f"1 : {1 / value:.3g}"


def _notes(report) -> list[str]:
    lines = list(report.workload.notes)
    for row in report.backend_rows():
        for note in dict.fromkeys(row["notes"]):
            lines.append(f"{row['backend']}: {note}")
        if row["graded_input_operations_per_clip"]:
            lines.append(f"{row['backend']}: {_si(row['graded_input_operations_per_clip'])} of the SOPs per clip "
                         "had graded (non-binary) input, so they are multiply-accumulates; pricing them as "
                         "accumulates underestimates their energy")
        if row["delays_steps"]:
            delays = ", ".join(f"{k}={v}" for k, v in row["delays_steps"].items())
            lines.append(f"{row['backend']}: raw records lag the graph's time base by (steps) {delays}; "
                         "records above are shifted back")
    caveat = next(iter(report.energy.values())).caveats if report.energy else ""
    if caveat:
        lines.append(f"energy: {caveat}")
    return lines


def render_text(report) -> str:
    """Render the report as plain-text tables for the terminal."""
    parts = [
        f"Workload: {report.workload.description}; dt = {report.workload.dt:g} s",
        "Reference: the project's NIR simulator (forward Euler, float64).",
        "", _backend_table(report, "simple"),
        "", "Per layer:", _layer_table(report, "simple"),
        "", _cnn_table(report, "simple"),
        "", "Energy per clip (estimates):", _energy_table(report, "simple"),
        "", "Notes:",
    ]
    parts += [f"- {line}" for line in _notes(report)]
    return "\n".join(parts)


def render_markdown(report, energy_constants: str) -> str:
    """Render the report as a Markdown page, with the energy constants and their sources."""
    parts = [
        "# Backend comparison", "",
        f"Workload: {report.workload.description}; dt = {report.workload.dt:g} s.", "",
        "Reference: the project's NIR simulator (forward Euler, float64).", "",
        "## Backends", "", _backend_table(report, "github"), "",
        "## Per layer", "", _layer_table(report, "github"), "",
        "## CNN", "", _cnn_table(report, "github"), "",
        "## Energy per clip (estimates)", "", _energy_table(report, "github"), "",
        "### Constants", "",
        energy_constants, "",
        "## Notes", "",
    ]
    parts += [f"- {line}" for line in _notes(report)]
    return "\n".join(parts) + "\n"
