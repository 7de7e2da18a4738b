"""PNG plots of the backend comparison: spike rasters and spikes per layer."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

# A raster shows at most this many neurons per layer, spread evenly over the layer.
RASTER_NEURONS = 256


def _raster_axes(ax, record: np.ndarray, title: str) -> None:
    steps = record.shape[0]
    flat = record[:, 0].reshape(steps, -1)
    count = flat.shape[1]
    chosen = np.unique(np.linspace(0, count - 1, min(count, RASTER_NEURONS)).astype(int))
    times, neurons = np.nonzero(flat[:, chosen])
    ax.scatter(times, chosen[neurons], s=2, marker="|", color="black")
    ax.set_xlim(-0.5, steps - 0.5)
    ax.set_ylim(-0.5, count - 0.5)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("neuron")


def plot_rasters(report, out: Path, atomic_write) -> list[Path]:
    """Write one raster figure per backend (first clip, every spiking layer); return the paths."""
    paths = []
    for measurement in report.backends:
        layers = list(measurement.run.spikes)
        if not layers:  # a graph without spiking nodes has nothing to draw
            continue
        fig, axes = plt.subplots(len(layers), 1, figsize=(8, 1.6 * len(layers) + 0.8), sharex=True, squeeze=False)
        for ax, layer in zip(axes[:, 0], layers):
            record = measurement.run.spikes[layer]
            shown = min(record[:, 0].reshape(record.shape[0], -1).shape[1], RASTER_NEURONS)
            _raster_axes(ax, record, f"{layer} ({shown} of {int(np.prod(record.shape[2:]))} neurons shown)")
        axes[-1, 0].set_xlabel("time step")
        fig.suptitle(f"Spike raster, {measurement.name}, clip 0")
        fig.tight_layout()
        path = out / f"raster_{measurement.name}.png"
        atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def plot_layer_spikes(report, out: Path, atomic_write) -> list[Path]:
    """Write a grouped bar chart of spikes per clip in each layer, one bar per backend (none without layers)."""
    backends = report.backends
    layers = [layer.name for layer in backends[0].counts.layers if layer.kind == "neuron"]
    if not layers:
        return []
    width = 0.8 / max(len(backends), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(layers)), 4))
    positions = np.arange(len(layers))
    for index, measurement in enumerate(backends):
        by_name = {layer.name: measurement.counts.per_sample(layer.spikes) for layer in measurement.counts.layers}
        values = [max(by_name[layer], 1e-1) for layer in layers]
        ax.bar(positions + index * width, values, width, label=measurement.name)
    ax.set_xticks(positions + width * (len(backends) - 1) / 2, layers, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("spikes per clip")
    ax.set_title("Spikes per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "spikes_per_layer.png"
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return [path]
