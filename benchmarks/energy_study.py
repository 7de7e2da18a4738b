"""Sweep clip length, input resolution and SNN time steps; compare the SNN's and X3D-S's costs.

Each point reports SNN spikes, synaptic operations and estimated energy on Loihi and on a
45 nm accumulator.  It reports X3D-S multiply-accumulates and estimated energy on a 45 nm
MAC, and the CPU latency and peak memory of both.  The growth of each cost with the input size is fitted
as a power law, and the point where the SNN stops being cheaper is located or
extrapolated.  See ``hardware/energy_study.py`` for the definitions.

Results: a table on stdout, and ``results.json``, ``results.md``, ``energy_vs_input.png``
and ``latency_vs_input.png`` in the output folder (``--out``).  Exit code 2 means bad
input, and the message names what to fix.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cohort.command_line import (OneLineErrorParser, UsageError, configure_logging, parse_arguments,
                                 prepare_output_folder)
from hardware.energy import EnergyTableError, load_energy_table
from hardware.energy_study import StudyConfig, run_study
from hardware.energy_study_report import fits_table, points_table, write_study
from hardware.report import run_details

# Few, tiny points for a smoke run (tests, a first look): about half a minute on 2 cores.
QUICK = dict(frames=(4, 8), resolutions=((16, 32), (32, 56)), steps_per_frame=(1, 2), base_frames=4,
             base_resolution=(16, 32), base_steps_per_frame=1, clips=1, repeats=1)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("the list is empty; give at least one integer")
    return values


def _pair(text: str) -> tuple[int, int]:
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pair SNN:X3D of integers, e.g. 64:112") from None


def _pair_list(text: str) -> tuple[tuple[int, int], ...]:
    pairs = tuple(_pair(part.strip()) for part in text.split(",") if part.strip())
    if not pairs:
        raise argparse.ArgumentTypeError("the list is empty; give pairs such as 32:56,64:112")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    defaults = StudyConfig()
    parser = OneLineErrorParser(prog="python benchmarks/energy_study.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=_int_list, help="clip lengths in frames, comma-separated "
                        f"(default: {','.join(map(str, defaults.frames))})")
    parser.add_argument("--resolutions", type=_pair_list,
                        help="input sizes in pixels as SNN:X3D pairs, comma-separated; SNN sizes are multiples of 8 "
                             f"(default: {','.join(f'{a}:{b}' for a, b in defaults.resolutions)})")
    parser.add_argument("--steps-per-frame", type=_int_list, help="SNN time steps per frame, comma-separated "
                        f"(default: {','.join(map(str, defaults.steps_per_frame))})")
    parser.add_argument("--base-frames", type=int, help=f"frames at the base point (default: {defaults.base_frames})")
    parser.add_argument("--base-resolution", type=_pair,
                        help="SNN:X3D sizes at the base point (default: "
                             f"{defaults.base_resolution[0]}:{defaults.base_resolution[1]})")
    parser.add_argument("--base-steps-per-frame", type=int,
                        help=f"SNN steps per frame at the base point (default: {defaults.base_steps_per_frame})")
    parser.add_argument("--clips", type=int, help=f"simulated clips per point (default: {defaults.clips})")
    parser.add_argument("--repeats", type=int, help=f"timed repeats per point (default: {defaults.repeats})")
    parser.add_argument("--seed", type=int, help="seed of the clips, spike encoding and untrained SNN (default: 0)")
    parser.add_argument("--backend", choices=("reference", "snntorch"),
                        help="simulator that runs the SNN (default: reference)")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch intra-op threads for both networks; 0 keeps PyTorch's choice (default: 1, a "
                             "single-core latency that other processes disturb least)")
    parser.add_argument("--dt", type=float, help=f"SNN time step in seconds (default: {defaults.dt:g})")
    parser.add_argument("--energy-table", type=Path,
                        help='JSON file replacing energy constants, e.g. {"loihi_sop_pj": {"value": 20.0, '
                             '"source": "my chip"}}; keys are listed in results.md')
    parser.add_argument("--quick", action="store_true",
                        help="a few tiny points (frames 4,8; sizes 16:32,32:56; steps 1,2; 1 clip, 1 repeat); "
                             "options given explicitly still apply")
    parser.add_argument("--out", type=Path, default=Path("results/energy_study"),
                        help="output folder, created if missing (default: results/energy_study)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def study_config(args: argparse.Namespace) -> StudyConfig:
    """Build the sweep's configuration from defaults, ``--quick`` and the explicit options."""
    values = dict(QUICK) if args.quick else {}
    for name in ("frames", "resolutions", "steps_per_frame", "base_frames", "base_resolution",
                 "base_steps_per_frame", "clips", "repeats", "seed", "backend", "dt"):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    try:
        return StudyConfig(**values)
    except ValueError as error:
        raise UsageError(str(error).replace("StudyConfig.", "option ")) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    if isinstance(args, int):
        return args
    configure_logging(args.verbose)
    try:
        if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
            raise UsageError(f"--dt must be a finite positive number of seconds, got {args.dt}")
        if args.threads < 0:
            raise UsageError(f"--threads must be 0 (PyTorch's choice) or a positive count, got {args.threads}")
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        config = study_config(args)
        table = load_energy_table(args.energy_table)
        prepare_output_folder(args.out)
        result = run_study(config, table, progress=not args.no_progress)
        result.run_details = run_details(config.repeats, config.seed)
        paths = write_study(result, args.out)
    except (UsageError, EnergyTableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(points_table(result))
    print()
    print(fits_table(result))
    print()
    for crossover in result.crossovers:
        print(f"{crossover.axis}, {crossover.ratio}: {crossover.text}")
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(f"\nwritten: {', '.join(str(path) for path in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
