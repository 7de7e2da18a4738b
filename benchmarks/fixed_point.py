"""Compare the Lava fixed-point SNN with Lava floating point under worst-case and calibrated scales.

The PulmoFusion SNN (untrained and seeded, or ``--checkpoint``) runs on simulated
thermal clips rate-coded into spikes, on lava-float and on lava-fixed with both
scale policies.  ``--calibration-clips`` further clips, not used for the comparison,
set the calibrated scales.  For each policy the report gives:

* the per-layer spike agreement with lava-float,
* the change in output spikes and predicted classes,
* the accuracy on the simulated labels (with a checkpoint),
* the integer scales and exponents per layer,
* every u wrap, v saturation and Conv wrap that the integer emulator found.

Results: a table on stdout, and ``results.json``, ``results.md`` and
``agreement_per_layer.png`` in ``--out``.  Exit code 2 means bad input, and the message
names what to fix.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from cohort.command_line import (OneLineErrorParser, UsageError, configure_logging, parse_arguments,
                                 prepare_output_folder)
from cohort.files import atomic_write
from hardware.calibration_input import add_calibration_options
from hardware.workload import WorkloadError, prepare_workload
from neuro.agreement import compare_runs
from neuro.backends import BackendMappingError, UnsupportedNodeError
from neuro.backends.lava import LavaBackend
from neuro.backends.lava.calibration import POLICIES, CalibrationConfig, calibrate
from neuro.checkpoint import CheckpointError, load_snn

DEFAULT_CLIPS = 8
DEFAULT_CALIBRATION_CLIPS = 4
BAD_INPUT_ERRORS = (UnsupportedNodeError, BackendMappingError, CheckpointError, WorkloadError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python benchmarks/fixed_point.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="trained PulmoFusion SNN checkpoint (from save_snn)")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS,
                        help=f"simulated clips compared (default: {DEFAULT_CLIPS})")
    parser.add_argument("--calibration-clips", type=int, default=DEFAULT_CALIBRATION_CLIPS,
                        help=f"further simulated clips that set the calibrated scales "
                             f"(default: {DEFAULT_CALIBRATION_CLIPS})")
    parser.add_argument("--steps", type=int, help="time steps per clip (default: one per frame)")
    parser.add_argument("--dt", type=float, help="time step in seconds (default: the SNN's dt)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the clips, the spike encoding and the untrained SNN (default: 0)")
    add_calibration_options(parser)
    parser.add_argument("--no-fill-grid", action="store_true",
                        help="with --no-per-row, keep the Dense weight exponent of the worst-case policy")
    parser.add_argument("--no-per-row", action="store_true",
                        help="use one scale per layer instead of one per output row or channel in the calibrated "
                             "policy")
    parser.add_argument("--no-balanced-rounding", action="store_true",
                        help="round each calibrated weight to the nearest level instead of balancing each row's "
                             "summed rounding error")
    parser.add_argument("--out", type=Path, default=Path("results/fixed_point"),
                        help="output folder, created if missing (default: results/fixed_point)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for option, value in (("--clips", args.clips), ("--calibration-clips", args.calibration_clips)):
        if value < 1:
            raise UsageError(f"{option} must be at least 1, got {value}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise UsageError(f"--dt must be a finite positive number of seconds, got {args.dt}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is an existing file, not a folder; choose a folder path")
    args.calibration_config = CalibrationConfig(
        percentile=args.percentile, headroom=args.headroom, fill_weight_grid=not args.no_fill_grid,
        per_row_scales=not args.no_per_row, balanced_rounding=not args.no_balanced_rounding,
    )


def _classes(output: np.ndarray) -> np.ndarray:
    """Return the class with the most output spikes per sample of a (T, B, classes) record."""
    return output.reshape(output.shape[0], output.shape[1], -1).sum(axis=0).argmax(axis=-1)


def _policy_result(name, run, float_run, labels, trained: bool, caught: list[str]) -> dict:
    agreement = compare_runs(float_run, run)
    float_classes, fixed_classes = _classes(float_run.output), _classes(run.output)
    result = {
        "policy": name,
        "agreement": {layer.layer: layer.agreement for layer in agreement},
        "first_divergence": {layer.layer: layer.first_divergence for layer in agreement},
        "output_spikes_float": int(float_run.output.sum()),
        "output_spikes_fixed": int(run.output.sum()),
        "class_changes": int(np.count_nonzero(float_classes != fixed_classes)),
        "quantisation": {
            layer: {"scale": report.scale, "weight_exp": report.weight_exp,
                    "row_scales": None if report.row_scales is None else
                    [float(report.row_scales.min()), float(report.row_scales.max())],
                    "weight_range": list(report.weight_range), "weight_error": report.weight_error,
                    "vth": None if report.vth is None else [int(report.vth.min()), int(report.vth.max())]}
            for layer, report in run.quantisation.items()
        },
        "overflow": [vars(event) | {"first": event.first} for event in run.overflow.events],
        "overflow_total": run.overflow.total,
        "emulator_mismatch": run.emulator_mismatch,
        "warnings": caught,
    }
    if trained:
        result["accuracy_float"] = float(np.mean(float_classes == labels))
        result["accuracy_fixed"] = float(np.mean(fixed_classes == labels))
    return result


def execute(args: argparse.Namespace) -> dict:
    """Prepare the clips, calibrate, run the three Lava configurations and return the results."""
    from tqdm import tqdm

    total = args.clips + args.calibration_clips
    workload = prepare_workload(argparse.Namespace(
        graph=None, checkpoint=args.checkpoint, seed=args.seed, dt=args.dt, clips=total, steps=args.steps,
    ))
    calibration_spikes = workload.spikes[:, :args.calibration_clips]
    spikes = workload.spikes[:, args.calibration_clips:]
    labels = workload.labels[args.calibration_clips:]
    config = args.calibration_config
    calibration = calibrate(workload.graph, calibration_spikes, workload.dt, config)

    backends = {"lava-float": LavaBackend(False), "worst_case": LavaBackend(True),
                "calibrated": LavaBackend(True, calibration=calibration)}
    for backend in backends.values():
        backend.check(workload.graph, spikes, workload.dt)
    runs, caught = {}, {}
    for name, backend in tqdm(backends.items(), desc="lava runs", unit="run", file=sys.stderr):
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            runs[name] = backend.run(workload.graph, spikes, workload.dt)
        caught[name] = [str(record.message) for record in records]

    return {
        "description": workload.description.replace(f"on {total} thermal", f"on {args.clips} thermal"),
        "calibration": {"clips": args.calibration_clips, "percentile": config.percentile,
                        "headroom": config.headroom, "fill_weight_grid": config.fill_weight_grid,
                        "per_row_scales": config.per_row_scales, "balanced_rounding": config.balanced_rounding,
                        "summary": calibration.summary().splitlines()},
        "trained": workload.trained,
        "labels": [int(label) for label in labels],
        "policies": [_policy_result(name, runs[name], runs["lava-float"], labels, workload.trained, caught[name])
                     for name in POLICIES],
        "notes": workload.notes,
    }


def format_table(results: dict) -> str:
    """Return the per-layer agreement and output summary as a Markdown table."""
    policies = results["policies"]
    lines = ["| layer | " + " | ".join(f"agreement {p['policy']}" for p in policies) + " |",
             "|---|" + "---|" * len(policies)]
    for layer in policies[0]["agreement"]:
        lines.append(f"| {layer} | " + " | ".join(f"{p['agreement'][layer]:.4%}" for p in policies) + " |")
    lines += ["", "| policy | output spikes float -> fixed | class changes | overflow events | accuracy float -> fixed |",
              "|---|---|---|---|---|"]
    for p in policies:
        accuracy = (f"{p['accuracy_float']:.3f} -> {p['accuracy_fixed']:.3f}" if "accuracy_fixed" in p
                    else "n/a (untrained)")
        lines.append(f"| {p['policy']} | {p['output_spikes_float']} -> {p['output_spikes_fixed']} | "
                     f"{p['class_changes']} of {len(results['labels'])} | {p['overflow_total']} | {accuracy} |")
    return "\n".join(lines)


def _scale_text(quantisation: dict) -> str:
    rows = quantisation["row_scales"]
    if rows is None:
        return f"{quantisation['scale']:.6g}"
    return f"{rows[0]:.6g}..{rows[1]:.6g} (per row)"


def _markdown(results: dict) -> str:
    parts = ["# Lava fixed point against Lava floating point", "", results["description"] + ".", "",
             format_table(results), "", "## Scales per layer", ""]
    for p in results["policies"]:
        parts.append(f"### {p['policy']}")
        parts += [f"- {layer}: scale {_scale_text(q)}, weight_exp {q['weight_exp']}, weights {q['weight_range']}, "
                  f"weight error {q['weight_error']:.2%}, vth {q['vth']}" for layer, q in p["quantisation"].items()]
        events = [event for event in p["overflow"] if event["count"]]
        parts.append(f"- overflow: {len(events)} layer/kind entries with events, {p['overflow_total']} events in all")
        parts += [f"  - {e['layer']} {e['kind']}: {e['count']} of {e['entries']}, first {e['first']}, "
                  f"peak {e['peak']:.3g}" for e in events]
        parts += [f"- warning: {text}" for text in p["warnings"]]
        parts.append("")
    calibration = results["calibration"]
    parts += ["## Calibration", "",
              f"- {calibration['clips']} clips not used in the comparison; per-row scales "
              f"{calibration['per_row_scales']}, balanced rounding {calibration['balanced_rounding']}, "
              f"Dense grid filling {calibration['fill_weight_grid']}"]
    parts += [f"- {line}" for line in calibration["summary"]]
    parts += [f"- note: {note}" for note in results["notes"]]
    return "\n".join(parts) + "\n"


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = results["policies"]
    layers = list(policies[0]["agreement"])
    positions = np.arange(len(layers))
    width = 0.8 / len(policies)
    figure, axes = plt.subplots(figsize=(8, 4))
    for index, p in enumerate(policies):
        axes.bar(positions + index * width, [100 * p["agreement"][layer] for layer in layers], width,
                 label=p["policy"])
    axes.set_xticks(positions + width * (len(policies) - 1) / 2, layers, rotation=30)
    axes.set_ylabel("spike agreement with lava-float (%)")
    axes.set_ylim(min(100 * min(p["agreement"].values()) for p in policies) - 5, 100.5)
    axes.legend()
    axes.set_title("Lava fixed point per layer")
    figure.tight_layout()
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)


def write_results(results: dict, out: Path) -> list[Path]:
    """Write results.json, results.md and agreement_per_layer.png atomically into ``out``."""
    json_text = json.dumps(results, indent=2)
    paths = [atomic_write(out / "results.json", lambda temporary: Path(temporary).write_text(json_text)),
             atomic_write(out / "results.md", lambda temporary: Path(temporary).write_text(_markdown(results)))]
    _plot(results, out / "agreement_per_layer.png")
    return [*paths, out / "agreement_per_layer.png"]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    if isinstance(args, int):
        return args
    configure_logging(args.verbose)
    try:
        _check_args(args)
        if args.checkpoint is not None:
            load_snn(args.checkpoint)  # a bad checkpoint fails here, before --out is created
        prepare_output_folder(args.out)
        results = execute(args)
        paths = write_results(results, args.out)
    except BAD_INPUT_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(results))
    for p in results["policies"]:
        for text in p["warnings"]:
            print(f"warning ({p['policy']}): {text}")
    print(f"\nwritten: {', '.join(str(path) for path in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
