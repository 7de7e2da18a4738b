"""Outputs of the energy study: a text table, JSON, Markdown and log-scale PNG plots.

Every number comes from a ``StudyResult``; nothing is typed in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from cohort.files import atomic_write  # noqa: E402
from hardware.energy import energy_table_markdown  # noqa: E402
from hardware.energy_study import AXES, StudyResult  # noqa: E402

AXIS_LABELS = {"frames": "frames per clip", "resolution": "input size (px), SNN:X3D",
               "steps_per_frame": "SNN time steps per frame"}
UJ = 1e6  # pJ per microjoule


def study_dict(result: StudyResult) -> dict:
    """Return the whole study as JSON-ready data."""
    config = asdict(result.config)
    config["resolutions"] = [list(pair) for pair in result.config.resolutions]
    config["base_resolution"] = list(result.config.base_resolution)
    return {
        "config": config,
        "work_definition": "input elements per clip: SNN time steps x input pixels; CNN frames x input pixels",
        "points": result.points,
        "fits": {axis: {cost: fit.to_dict() for cost, fit in costs.items()} for axis, costs in result.fits.items()},
        "crossovers": [crossover.to_dict() for crossover in result.crossovers],
        "energy_table": {key: asdict(constant) for key, constant in result.energy_table.items()},
        "notes": result.notes,
        "run_details": result.run_details,
    }


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def points_table(result: StudyResult) -> str:
    """Return a fixed-width table of every point: counts, energy (uJ per clip), latency (ms) and memory (MB).

    The memory columns are the rise of the process's peak resident memory over its level
    before the call, in MiB.
    """
    header = (f"{'axis':<16}{'frames':>7}{'SNN px':>7}{'X3D px':>7}{'steps':>6}{'spikes':>11}{'SOPs':>11}"
              f"{'MACs':>11}{'Loihi uJ':>10}{'SNN45 uJ':>10}{'CNN45 uJ':>10}{'Loihi/CNN':>10}"
              f"{'SNN ms':>10}{'CNN ms':>10}{'SNN +MB':>9}{'CNN +MB':>9}")
    lines = [header, "-" * len(header)]
    for row in result.points:
        snn, cnn, energy = row["snn"], row["cnn"], row["energy"]
        lines.append(
            f"{row['axis']:<16}{row['frames']:>7}{row['snn_resolution']:>7}{row['x3d_resolution']:>7}"
            f"{snn['steps']:>6}{snn['spikes_per_clip']:>11.3g}{snn['synaptic_operations_per_clip']:>11.3g}"
            f"{cnn['macs_per_clip']:>11.3g}{energy['snn_loihi_pj'] / UJ:>10.3g}"
            f"{energy['snn_45nm_fp32_pj'] / UJ:>10.3g}{energy['cnn_45nm_fp32_pj'] / UJ:>10.3g}"
            f"{_number(energy['loihi_to_cnn_fp32']):>10}{snn['latency_per_clip_s'] * 1e3:>10.3g}"
            f"{cnn['latency_per_clip_s'] * 1e3:>10.3g}{snn['memory_increase_mb']:>9.3g}"
            f"{cnn['memory_increase_mb']:>9.3g}"
        )
    return "\n".join(lines)


def fits_table(result: StudyResult) -> str:
    """Return the fitted exponents b of cost = a * work^b, per axis and cost, with R^2."""
    lines = [f"{'axis':<16}{'cost':<26}{'exponent b':>11}{'R^2':>10}  note"]
    for axis, costs in result.fits.items():
        for cost, fit in costs.items():
            lines.append(f"{axis:<16}{cost:<26}{_number(fit.exponent):>11}{_number(fit.r_squared):>10}  "
                         f"{fit.reason}")
    return "\n".join(lines)


def study_markdown(result: StudyResult, plot_names: list[str]) -> str:
    """Return ``results.md``: settings, points, fits, crossovers, notes and the energy constants."""
    config = result.config
    pairs = ", ".join(f"{snn} with {x3d}" for snn, x3d in config.resolutions)
    lines = [
        "# Energy study: PulmoFusion SNN against X3D-S", "",
        f"Base point: {config.base_frames} frames, SNN {config.base_resolution[0]} px with X3D "
        f"{config.base_resolution[1]} px, {config.base_steps_per_frame} SNN step(s) per frame. "
        f"Resolution pairs (SNN px with X3D px): {pairs}. {config.clips} simulated clip(s) per point, "
        f"seed {config.seed}, SNN backend {config.backend}, dt {config.dt:g} s, {config.repeats} timed repeat(s).",
        "",
        "Work is the number of input elements per clip: SNN time steps x input pixels, CNN frames x input pixels. "
        "Energies are in microjoules per clip, latencies in milliseconds per clip (minimum over the timed repeats).",
        "",
        "## Points", "", "```", points_table(result), "```", "",
        "## Growth with work: cost = a * work^b", "", "```", fits_table(result), "```", "",
        "## Where the SNN stops being cheaper", "",
    ]
    for crossover in result.crossovers:
        lines.append(f"- {crossover.axis}, {crossover.ratio}: {crossover.text}.")
    lines.append("- Along resolution the ratio is fitted against the SNN size; an extrapolation assumes the "
                     "X3D size keeps following the pairing.")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result.notes]
    if result.points:
        lines.append(f"- Energy caveats: {result.points[0]['energy']['caveats']}")
    lines += ["", "## Energy constants", "", energy_table_markdown(result.energy_table), ""]
    lines += [f"![{name}]({name})" for name in plot_names]
    return "\n".join(lines) + "\n"


def _plot(result: StudyResult, series: list[tuple[str, str, str, float]], ylabel: str, title: str, path: Path):
    """Plot one panel per axis; ``series`` lists (label, section, key, scale) of each line."""
    fig, axes = plt.subplots(1, len(AXES), figsize=(4.2 * len(AXES), 3.8), squeeze=False)
    for ax, axis in zip(axes[0], AXES):
        rows = sorted((row for row in result.points if row["axis"] == axis), key=lambda row: row["axis_value"])
        x = [row["axis_value"] for row in rows]
        for label, section, key, scale in series:
            values = [row[section][key] * scale for row in rows]
            if all(value > 0 for value in values):
                ax.plot(x, values, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if axis == "resolution":
            labels = [f"{row['snn_resolution']}:{row['x3d_resolution']}" for row in rows]
        else:
            labels = [str(value) for value in x]
        ax.set_xticks(x, labels)
        ax.minorticks_off()
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_study(result: StudyResult, out: Path) -> list[Path]:
    """Write results.json, energy_vs_input.png, latency_vs_input.png and results.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    energy_series = [("SNN on Loihi", "energy", "snn_loihi_pj", 1 / UJ),
                     ("SNN, 45 nm fp32 accumulate", "energy", "snn_45nm_fp32_pj", 1 / UJ),
                     ("X3D-S, 45 nm fp32 MAC", "energy", "cnn_45nm_fp32_pj", 1 / UJ),
                     ("X3D-S, 45 nm int8 MAC", "energy", "cnn_45nm_int8_pj", 1 / UJ)]
    latency_series = [(f"SNN ({result.config.backend} simulator, CPU)", "snn", "latency_per_clip_s", 1e3),
                      ("X3D-S (PyTorch, CPU)", "cnn", "latency_per_clip_s", 1e3)]
    plots = [
        _plot(result, energy_series, "energy per clip (uJ, estimate)", "Estimated energy against input size",
              out / "energy_vs_input.png"),
        _plot(result, latency_series, "latency per clip (ms, min of repeats)", "CPU latency against input size",
              out / "latency_vs_input.png"),
    ]
    json_path = atomic_write(out / "results.json", lambda temporary: Path(temporary).write_text(
        json.dumps(study_dict(result), indent=2), encoding="utf-8"))
    markdown = study_markdown(result, [path.name for path in plots])
    md_path = atomic_write(out / "results.md", lambda temporary: Path(temporary).write_text(markdown, encoding="utf-8"))
    return [json_path, md_path, *plots]
