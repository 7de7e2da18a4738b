"""Run one NIR graph on every SNN backend, compare them, and set the SNN against the X3D-S CNN.

With no arguments: the PulmoFusion SNN (untrained, seeded) is written as a NIR graph,
a set of simulated thermal breathing clips is rate-coded into spikes, and the graph
runs on snnTorch, Norse, Lava floating point and Lava fixed point.  Each backend is
compared layer by layer with the project's reference simulator.  Each run is counted
(spikes, synaptic operations, neuron updates, sparsity), timed and measured for memory.
The X3D-S CNN runs on the same clips for its multiply-accumulates, latency and memory,
and energy is estimated for both from one table of constants.

Results: a table on stdout, and ``results.json``, ``results.md``, ``graph.nir`` and PNG
plots in the output folder (``--out``).  Exit code 2 means bad input, and the message names
what to fix.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cohort.command_line import (OneLineErrorParser, UsageError, configure_logging, parse_arguments,
                                 prepare_output_folder)
from hardware.energy import EnergyTableError, load_energy_table
from hardware.report import Report, write_report
from hardware.workload import BackendMeasurement, WorkloadError, prepare_workload, run_backend, run_cnn
from neuro.backends import BACKEND_NAMES, BackendMappingError, UnsupportedNodeError, create_backend
from neuro.checkpoint import CheckpointError
from neuro.nir_io import GraphFileError
from neuro.spike_input import SpikeInputError

DEFAULT_BACKENDS = ("snntorch", "norse", "lava-float", "lava-fixed")
DEFAULT_CLIPS = 8
BAD_INPUT_ERRORS = (GraphFileError, SpikeInputError, UnsupportedNodeError, BackendMappingError,
                    CheckpointError, EnergyTableError, WorkloadError)


def _backend_list(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in BACKEND_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(unknown) or '(none given)'}; choose from {', '.join(BACKEND_NAMES)}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python benchmarks/compare_backends.py",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--graph", type=Path, help="NIR file to run instead of the PulmoFusion SNN")
    parser.add_argument("--input", type=Path,
                        help="input spikes for --graph: .npy shaped (T, *input) or (T, B, *input), or .csv "
                             "with one row per step and one column per input element")
    parser.add_argument("--checkpoint", type=Path, help="trained PulmoFusion SNN checkpoint (from save_snn)")
    parser.add_argument("--backends", type=_backend_list, default=list(DEFAULT_BACKENDS),
                        help=f"comma-separated backends, from: {', '.join(BACKEND_NAMES)} "
                             f"(default: {','.join(DEFAULT_BACKENDS)}); the reference always runs as the yardstick")
    parser.add_argument("--steps", type=int,
                        help="time steps to run (default: the whole input). For the simulated clips, each frame "
                             "is encoded into ceil(steps / frames) steps and the spikes are cut at --steps")
    parser.add_argument("--dt", type=float,
                        help="time step in seconds (default: the dt stored in the graph, else 1e-3)")
    parser.add_argument("--clips", type=int, help=f"simulated clips in the default input (default: {DEFAULT_CLIPS})")
    parser.add_argument("--seed", type=int, help="seed of the simulated clips, the spike encoding and the untrained "
                                                 "SNN's weights (default: 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per backend for latency (default: 3)")
    parser.add_argument("--energy-table", type=Path,
                        help='JSON file replacing energy constants, e.g. {"loihi_sop_pj": {"value": 20.0, '
                             '"source": "my chip"}}; keys are listed in results.md')
    parser.add_argument("--skip-cnn", action="store_true", help="do not build and run the X3D-S CNN")
    parser.add_argument("--out", type=Path, default=Path("results/compare_backends"),
                        help="output folder, created if missing (default: results/compare_backends)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise UsageError(f"--dt must be a finite positive number of seconds, got {args.dt}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.clips is not None and args.clips < 1:
        raise UsageError(f"--clips must be at least 1, got {args.clips}")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {args.repeats}")
    if args.input is not None and args.graph is None:
        raise UsageError("--input needs --graph: the default SNN takes its input from simulated clips")
    if args.graph is not None:
        if args.input is None:
            raise UsageError("--graph needs --input: give the input spikes as a .npy or .csv file")
        for option, value in (("--checkpoint", args.checkpoint), ("--clips", args.clips), ("--seed", args.seed)):
            if value is not None:
                raise UsageError(f"{option} applies to the PulmoFusion SNN and its simulated clips only; "
                                 "drop it when using --graph")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is an existing file, not a folder; choose a folder path")
    args.clips = DEFAULT_CLIPS if args.clips is None else args.clips
    args.seed = 0 if args.seed is None else args.seed


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    if isinstance(args, int):
        return args
    configure_logging(args.verbose)
    try:
        _check_args(args)
        energy_table = load_energy_table(args.energy_table)
        workload = prepare_workload(args)
        backends = [create_backend(name) for name in args.backends]
        reference_backend = create_backend("reference")
        # Fail on bad input before running anything, naming a requested backend first.
        for backend in [*backends, reference_backend]:
            backend.check(workload.graph, workload.spikes, workload.dt)
        prepare_output_folder(args.out)
        report = execute(workload, reference_backend, backends, energy_table, args)
        paths = write_report(report, args.out)
    except BAD_INPUT_ERRORS + (UsageError,) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.table())
    print(f"\nwritten: {', '.join(str(p) for p in paths)}")
    return 0


def execute(workload, reference_backend, backends, energy_table, args) -> Report:
    """Run the reference, every requested backend and the CNN; return the report."""
    from tqdm import tqdm

    reference = run_backend(reference_backend, workload, repeats=1, reference=None)
    results: list[BackendMeasurement] = []
    for backend in tqdm(backends, desc="backends", unit="backend", file=sys.stderr):
        results.append(run_backend(backend, workload, repeats=args.repeats, reference=reference.run))
    cnn = None if args.skip_cnn or workload.clips is None else run_cnn(workload, repeats=args.repeats)
    return Report.build(workload, reference, results, cnn, energy_table, repeats=args.repeats, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
