"""Command line of the hardware package: ``python -m hardware export``.

``export`` writes the SNN's chip artefacts (see ``hardware/export.py``) and prints a
summary.  Without ``--checkpoint`` or ``--graph`` it exports the untrained default
PulmoSNN.  ``--calibration-clips N`` (N > 0) sizes the fixed-point scales on N simulated
thermal clips instead of the worst case (see ``neuro/backends/lava/calibration.py``).

Exit codes: 0 success, 2 bad input or a failed export (one line on stderr, and no
partial file in ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from hardware.calibration_input import add_calibration_options

logger = logging.getLogger(__name__)


class _OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(prog="python -m hardware", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrorParser)
    export = commands.add_parser("export", help="write graph.nir, network.net (lava-dl netx), resources.json/.md "
                                                   "and quantisation.json")
    source = export.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="PulmoSNN checkpoint written by neuro.checkpoint.save_snn")
    source.add_argument("--graph", help="NIR graph file to export instead of a checkpoint")
    export.add_argument("--dt", type=float, help="time step in seconds (default: the one stored with the "
                                                 "checkpoint or graph)")
    export.add_argument("--steps", type=int, default=30,
                        help="input time steps per sample; sets the netx network's reset interval (default: 30)")
    export.add_argument("--chip", default="loihi2", help="chip whose per-core limits the resource report "
                                                         "checks (default: loihi2)")
    export.add_argument("--chip-limits", help="JSON file replacing some of --chip's limits "
                                              "(see hardware.chip_limits.load_chip_limits)")
    export.add_argument("--calibration-clips", type=int, default=0,
                        help="simulated thermal clips that set calibrated fixed-point scales; 0 keeps the "
                             "worst-case scales (default: 0)")
    export.add_argument("--calibration-seed", type=int, default=0,
                        help="seed of the simulated cohort and of the rate code of the calibration clips "
                             "(default: 0)")
    add_calibration_options(export)
    export.add_argument("--allow-oversize", action="store_true",
                        help="export even if the network does not fit the chip (default: stop with an error)")
    export.add_argument("--out", required=True, help="output folder; created if missing, existing files "
                                                     "of the same names are replaced")
    return parser


def _scale_text(layer: dict) -> str:
    rows = layer["row_scales"]
    if rows is None:
        return f"{layer['scale']:.6g}"
    return f"{rows[0]:.6g}..{rows[1]:.6g} per row"


def _quantisation_lines(record: dict) -> list[str]:
    if record["policy"] == "calibrated":
        calibration = record["calibration"]
        overflow = record["overflow"]
        lines = [f"fixed-point scales: calibrated on {record['calibration_clips']} clips (percentile "
                 f"{calibration['percentile']:g}, headroom {calibration['headroom']:g}); "
                 f"{overflow['total']} overflow events on them"]
    else:
        lines = ["fixed-point scales: worst case (no calibration clips)"]
    lines += [f"  {name}: scale {_scale_text(layer)}, weight_exp {layer['weight_exp']}"
              for name, layer in record["layers"].items()]
    return lines


def _summary(result) -> str:
    netx = result.netx
    report = result.resources.to_dict()
    lines = [f"exported to {result.out_dir} (dt {result.dt:g} s, {result.num_steps} steps per sample)"]
    lines += [f"  {name}" for name in result.files]
    lines.append(f"netx blocks: {', '.join(netx.layers)}")
    lines.append(f"load with lava.lib.dl.netx.hdf5.Network(net_config='{result.files['network.net']}', "
                 f"reset_interval={netx.reset_interval}, reset_offset={netx.reset_offset})")
    if netx.exact:
        lines.append("netx network: the same integer network as lava-fixed")
    else:
        lines.append("netx network: lava-fixed's integer network with these changes netx's loader forces:")
    lines += [f"  {note}" for note in result.notes]
    lines += _quantisation_lines(result.quantisation)
    lines.append(f"resources on {result.chip}: " + ("fits" if result.resources.fits else "DOES NOT FIT"))
    totals = report.get("totals", {})
    if totals:
        lines.append("  " + ", ".join(f"{key} {value}" for key, value in totals.items()))
    return "\n".join(lines)


def _calibration_options_set(args: argparse.Namespace) -> bool:
    defaults = build_parser().parse_args(["export", "--out", "."])
    return any(getattr(args, name) != getattr(defaults, name) for name in ("percentile", "headroom", "calibration_seed"))


def _export(args: argparse.Namespace) -> int:
    from hardware.export import ExportError, calibrate_source, export_snn, load_source

    if args.calibration_clips < 0:
        raise ExportError(f"--calibration-clips must be >= 0, got {args.calibration_clips}; pass 0 for "
                          "the worst-case scales or the number of clips to calibrate on")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chip = args.chip
        if args.chip_limits is not None:
            from hardware.chip_limits import load_chip_limits
            chip = load_chip_limits(args.chip_limits, base=args.chip)
        source = load_source(checkpoint=args.checkpoint, graph=args.graph, dt=args.dt)
        calibration = None
        if args.calibration_clips > 0:
            calibration = calibrate_source(source, clips=args.calibration_clips, num_steps=args.steps,
                                           seed=args.calibration_seed, percentile=args.percentile,
                                           headroom=args.headroom)
        elif _calibration_options_set(args):
            warnings.warn("--percentile, --headroom and --calibration-seed take effect only with "
                          "--calibration-clips > 0; exporting with the worst-case scales", stacklevel=2)
        result = export_snn(args.out, source, num_steps=args.steps, chip=chip,
                            allow_oversize=args.allow_oversize, calibration=calibration)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(_summary(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _export(args)
    except (ValueError, NotImplementedError, OSError) as error:
        # CheckpointError, GraphFileError, ExportError, LavaMappingError, ResourceError and
        # NetxExportError are ValueErrors whose message names the file or value and the fix.
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
