"""Summary table and plot of a cross-validation benchmark over modalities and fusion modes.

``results`` is the dict ``benchmarks/train_models.py`` builds: one entry per
(modality, fusion mode) experiment with each branch's fold summary
(``fusion.metrics.summarise_folds``) and, for the SNN, the summary per backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cohort.files import atomic_write  # noqa: E402

# Figures reported by the PulmoFusion paper (arXiv 2501.17699) for its clinical cohort,
# shown beside the simulated cohort's results for reference only.
PAPER_TARGETS = {
    "thermal per-cycle accuracy": 0.92,
    "thermal per-patient accuracy": 0.995,
    "thermal PEF relative RMSE": 0.11,
    "RGB PEF relative RMSE": 0.26,
    "FEV1/FVC MAE (points)": 4.52,
}

COLUMNS = (
    ("per-cycle accuracy", "per_cycle_accuracy"),
    ("per-patient accuracy", "per_patient_accuracy"),
    ("F1", "f1"),
    ("PEF relative RMSE", "pef_relative_rmse"),
    ("PEF MAE (L/s)", "pef_mae_l_s"),
    ("FEV1/FVC MAE (points)", "fev1_fvc_mae_points"),
)
BASELINE_NAMES = {
    "majority_class": "baseline: training majority class",
    "training_mean": "baseline: training mean",
    "reference_equation": "baseline: reference equation (PEF)",
}
MODE_NAMES = {"none": "single-modal", "attention": "multi-modal, attention", "concat": "multi-modal, concatenation"}


def summary_rows(results: dict) -> list[dict]:
    """Return one row per (modality, fusion mode, branch) with mean and std of each metric."""
    rows = []
    for experiment in results["experiments"]:
        for branch, summary in experiment["evaluation"].items():
            row = {"modality": experiment["modality"], "mode": experiment["mode"], "branch": branch,
                   "training_minutes": experiment["training_seconds"].get(branch, 0.0) / 60.0}
            for _, key in COLUMNS:
                if key in summary:
                    row[key] = (summary[key]["mean"], summary[key]["std"])
            rows.append(row)
    return rows


def _cell(value: tuple[float, float] | None) -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:.3f} ± {std:.3f}"


def _backend_table(results: dict) -> list[str]:
    lines = []
    for experiment in results["experiments"]:
        backends = experiment.get("backends")
        if not backends:
            continue
        if not lines:
            lines += ["", "## SNN fold models on each backend", "",
                      "| modality | fusion | backend | per-cycle accuracy | per-patient accuracy | "
                      "class agreement with PyTorch |", "|---|---|---|---|---|---|"]
        for name, entry in backends.items():
            summary = entry["summary"]
            lines.append(f"| {experiment['modality']} | {MODE_NAMES[experiment['mode']]} | {name} | "
                         f"{_cell((summary['per_cycle_accuracy']['mean'], summary['per_cycle_accuracy']['std']))} | "
                         f"{_cell((summary['per_patient_accuracy']['mean'], summary['per_patient_accuracy']['std']))} | "
                         f"{summary['agreement_with_pytorch']['mean']:.3f} |")
    return lines


def summary_markdown(results: dict, rows: list[dict]) -> str:
    """Return the benchmark's Markdown report: the metrics table, the backend table and the paper's figures."""
    header = "| modality | branch | fusion | " + " | ".join(name for name, _ in COLUMNS) + " | training (min) |"
    lines = ["# PulmoFusion cross-validation on the simulated cohort", "",
             f"Configuration `{results['config']}`, store `{results['store']}`.  Mean ± standard deviation over "
             "folds; each fold model is scored on its own test subjects.  SNN rows classify; X3D rows regress PEF "
             "and FEV1/FVC, and their accuracy is that of FEV1/FVC < 0.70 on the predicted ratio.", "",
             header, "|" + "---|" * (len(COLUMNS) + 4)]
    for row in rows:
        cells = " | ".join(_cell(row.get(key)) for _, key in COLUMNS)
        lines.append(f"| {row['modality']} | {row['branch'].upper()} | {MODE_NAMES[row['mode']]} | {cells} | "
                     f"{row['training_minutes']:.1f} |")
    for modality, baselines in results.get("baselines", {}).items():
        for name, summary in baselines.items():
            cells = " | ".join(_cell((summary[key]["mean"], summary[key]["std"])) if key in summary else "–"
                               for _, key in COLUMNS)
            lines.append(f"| {modality} | no video | {BASELINE_NAMES[name]} | {cells} | – |")
    lines += _backend_table(results)
    lines += ["", "Figures the paper reports for its clinical cohort (not measured here): "
              + "; ".join(f"{name} {value:g}" for name, value in PAPER_TARGETS.items()) + ".",
              "", f"Total time of this run: {results['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot_summary(rows: list[dict], path: Path) -> None:
    """Plot per-cycle accuracy (SNN) and PEF relative RMSE (X3D) per modality and fusion mode, with fold std."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, branch, key, label in ((axes[0], "snn", "per_cycle_accuracy", "SNN per-cycle accuracy"),
                                     (axes[1], "x3d", "pef_relative_rmse", "X3D PEF relative RMSE")):
        chosen = [row for row in rows if row["branch"] == branch and key in row]
        names = [f"{row['modality']}\n{MODE_NAMES[row['mode']].replace('multi-modal, ', '')}" for row in chosen]
        axis.bar(range(len(chosen)), [row[key][0] for row in chosen], yerr=[row[key][1] for row in chosen],
                 capsize=4, color="tab:blue" if branch == "snn" else "tab:orange")
        axis.set_xticks(range(len(chosen)), names, fontsize=8)
        axis.set_title(label)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
