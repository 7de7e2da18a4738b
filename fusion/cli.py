"""Command line of the fusion package: ``python -m fusion train | evaluate | predict``.

- ``train`` trains the configured branches on every subject-wise fold of a cohort store
  and checkpoints each epoch; it resumes an interrupted run unless ``--no-resume``.
  It runs unchanged under ``torchrun --nproc_per_node=N -m fusion train ...``.
- ``evaluate`` scores each fold model on its test subjects and writes results.json,
  results.md and PNG plots into the run folder.
- ``predict`` runs the ensemble of fold models on a new recording and its metadata row.

Exit codes: 0 success, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cohort.command_line import OneLineErrorParser

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python -m fusion", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

    train = commands.add_parser("train", help="train every fold of the configured branches")
    train.add_argument("--config", type=Path, required=True,
                       help="TOML or YAML configuration (for example fusion/configs/small.toml)")
    train.add_argument("--store", type=Path, required=True, help="HDF5 cohort store (python -m cohort ingest)")
    train.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and results")
    train.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                       help="continue from the checkpoints in --out (default: on)")

    evaluate = commands.add_parser("evaluate", help="score each fold model on its test subjects")
    evaluate.add_argument("--run", type=Path, required=True, help="run folder written by train")
    evaluate.add_argument("--store", type=Path, required=True, help="the cohort store the run was trained on")

    predict = commands.add_parser("predict", help="predict one new recording with the fold-model ensemble")
    predict.add_argument("--run", type=Path, required=True, help="run folder written by train")
    predict.add_argument("--recording", type=Path, required=True, help="recording file or frame folder")
    predict.add_argument("--metadata", type=Path, required=True, help="metadata CSV with a row for --subject")
    predict.add_argument("--subject", required=True, help="subject id of the recording's metadata row")
    predict.add_argument("--fps", type=float, help="frame rate in Hz, for recordings that do not store one")
    predict.add_argument("--out", type=Path, help="folder for predictions.json (default: --run)")
    for sub in (train, evaluate, predict):
        sub.add_argument("--threads", type=int,
                         help="PyTorch CPU threads per process (default: PyTorch's choice); 1 is often fastest on "
                              "a shared or small CPU")
        sub.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _train(args) -> int:
    from fusion.config import load_config
    from fusion.distributed import setup_from_env, teardown
    from fusion.train import train_experiment

    config = load_config(args.config)
    if not args.store.is_file():
        raise FileNotFoundError(f"cohort store {args.store} not found; build one with python -m cohort ingest")
    process = setup_from_env()
    try:
        result = train_experiment(config, args.store, args.out, resume=args.resume, process=process)
    finally:
        teardown(process)
    if process.is_main:
        for fold in result.folds:
            print(f"{fold.branch} fold {fold.fold}: {fold.epochs} epochs, loss {fold.loss:.4f}, "
                  f"{fold.seconds:.1f} s this run, {fold.checkpoint}")
        print(f"trained {len(result.folds)} fold models in {result.seconds:.1f} s into {args.out}")
    return 0


def _evaluate(args) -> int:
    from fusion.evaluate import evaluate_experiment

    results = evaluate_experiment(args.run, args.store)
    for branch, entry in results["branches"].items():
        cells = ", ".join(f"{name} {value['mean']:.3f} ± {value['std']:.3f}" for name, value in entry["summary"].items())
        print(f"{branch}: {cells}")
    print(f"wrote results.json, results.md and plots into {args.run}")
    return 0


def _number_text(value: object) -> str:
    """Format a prediction value: integers (frames, classes) as they are, floats with 3 decimals."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _predict(args) -> int:
    from fusion.predict import predict_recording

    report = predict_recording(args.run, args.recording, args.metadata, args.subject, fps=args.fps,
                               out_dir=args.out)
    for cycle in report["cycles"]:
        values = ", ".join(f"{name} {_number_text(value)}" for name, value in cycle.items() if name != "cycle")
        print(f"cycle {cycle['cycle']}: {values}")
    print("patient: " + ", ".join(f"{name} {value}" for name, value in report["patient"].items()))
    print(f"wrote {report['path']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from cohort.readers import RecordingError
    from cohort.store_format import StoreError
    from fusion.checkpoint import CheckpointError

    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict}
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, StoreError, RecordingError, CheckpointError) as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = "; run the same command again to resume from the last finished epoch" if args.command == "train" else ""
        print(f"interrupted{resume}", file=sys.stderr)
        return 130
