"""Cross-validate the PulmoFusion models on a simulated cohort: thermal and RGB, single- and multi-modal.

With no arguments this

1. simulates a cohort (``--subjects`` subjects, ``--seed``) with ``python -m cohort simulate``
   and ingests its thermal recordings, then its RGB recordings cut at the thermal cycle
   times (``ingest --cycles-from thermal``), into one cohort store under the cache folder
   (``$PULMOFUSION_CACHE`` or ``~/.cache/pulmofusion``; reused by later runs).  Every clip
   lasts ``--window`` seconds from 1 s before its onset, so clip time is real time and a
   slow obstructed blow looks slower than a fast one;
2. trains and evaluates ``--config`` (default ``fusion/configs/small.toml``) with 5-fold
   subject-wise cross-validation for every modality and fusion mode (``none`` is the
   single-modal model, ``attention`` the metadata attention, ``concat`` the ablation);
3. runs each single- and multi-modal SNN fold model on every simulator backend and scores it
   again there;
4. prints one table and writes ``results.json``, ``results.md`` and ``summary.png`` into
   ``--out``, beside each experiment's own folder of checkpoints, tables and plots.

Every number comes from this run, except folds already trained in ``--out`` by an earlier
run with the same configuration: those are reused, and the training time shown is the one
their checkpoints recorded, epoch by epoch, when they were trained.  Baselines that use no
video (``fusion/baselines.py``) are scored on the same folds.  Exit code 2 means bad input, and the message names what to fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cohort.cli import main as cohort_main
from cohort.command_line import OneLineErrorParser, configure_logging, parse_arguments
from cohort.files import atomic_write
from cohort.sim_cache import default_cache_root
from fusion.backend_accuracy import backend_accuracy
from fusion.baselines import fold_baselines
from fusion.checkpoint import CheckpointError, load_checkpoint
from fusion.config import ConfigError, ExperimentConfig, load_config
from fusion.evaluate import evaluate_experiment
from fusion.train import fold_dir, train_experiment
from fusion.train_report import PAPER_TARGETS, summary_markdown, summary_rows, plot_summary
from hardware.workload import CLIP_WINDOW_S
from neuro.backends import BACKEND_NAMES

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "fusion" / "configs" / "small.toml"
MODALITIES = ("thermal", "rgb")
MODES = ("none", "attention", "concat")
DEFAULT_BACKENDS = ("snntorch", "norse", "lava-float", "lava-fixed")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="python benchmarks/train_models.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="experiment configuration, TOML or YAML "
                        "(default: fusion/configs/small.toml); its modality and fusion mode are overridden")
    parser.add_argument("--store", type=Path, help="use this cohort store instead of simulating one")
    parser.add_argument("--subjects", type=int, default=40, help="simulated subjects (default: 40)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    parser.add_argument("--frames", type=int, default=16, help="frames per stored clip (default: 16)")
    parser.add_argument("--size", type=int, default=64, help="stored clip height and width in pixels (default: 64)")
    parser.add_argument("--window", type=float, default=CLIP_WINDOW_S,
                        help=f"clip duration in seconds from 1 s before each onset (default: {CLIP_WINDOW_S:g}, "
                             "as compare_backends.py)")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="fusion modes to train (default: none attention concat)")
    parser.add_argument("--backends", nargs="*", choices=BACKEND_NAMES, default=list(DEFAULT_BACKENDS),
                        help="backends that rerun the SNN fold models (default: snntorch norse lava-float "
                             "lava-fixed; none to skip)")
    parser.add_argument("--out", type=Path, default=Path("results/train_models"), help="output folder")
    parser.add_argument("--no-resume", action="store_true", help="retrain folds already trained in --out")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return parser


def _run_cohort(arguments: list[str]) -> None:
    code = cohort_main(arguments)
    if code != 0:
        raise RuntimeError(f"'python -m cohort {' '.join(arguments)}' failed with exit code {code}")


def simulated_store(subjects: int, seed: int, frames: int, size: int, window_s: float) -> Path:
    """Simulate the cohort and ingest it once; return the store path (cached by all five values)."""
    folder = default_cache_root() / f"train-cohort-{subjects}s-seed{seed}"
    store = folder / f"clips-{frames}f-{size}px-{window_s:g}s.h5"
    done = store.with_suffix(".complete")
    if done.is_file() and store.is_file():
        return store
    recordings = folder / "recordings"
    if not (recordings / "metadata.csv").is_file():
        print(f"simulating {subjects} subjects into {recordings}", file=sys.stderr)
        _run_cohort(["simulate", "--out", str(recordings), "--subjects", str(subjects), "--seed", str(seed)])
    common = ["ingest", "--metadata", str(recordings / "metadata.csv"), "--recordings", str(recordings),
              "--store", str(store), "--frames", str(frames), "--size", str(size), "--window", str(window_s)]
    print(f"ingesting thermal and RGB clips into {store}", file=sys.stderr)
    _run_cohort(common + ["--modality", "thermal"])
    _run_cohort(common + ["--modality", "rgb", "--cycles-from", "thermal"])
    done.write_text("ingested\n")
    return store


def experiment_config(base: ExperimentConfig, modality: str, mode: str) -> ExperimentConfig:
    values = base.to_dict()
    values["data"]["modality"] = modality
    values["fusion"]["mode"] = mode
    return ExperimentConfig.from_dict(values)


def training_seconds(run_dir: Path, config: ExperimentConfig, branch: str) -> float:
    """Return the training time of all folds of ``branch`` as recorded epoch by epoch in their checkpoints."""
    total = 0.0
    for fold in range(config.data.folds):
        state = load_checkpoint(fold_dir(run_dir, config.data.modality, branch, fold) / "last.pt")
        total += sum(epoch["seconds"] for epoch in state["history"])
    return total


def run(args) -> dict:
    base = load_config(args.config)
    if args.store is not None:
        if not args.store.is_file():
            raise ValueError(f"store {args.store} not found; check the path or leave out --store")
        store = args.store
    else:
        store = simulated_store(args.subjects, args.seed, args.frames, args.size, args.window)

    experiments = []
    baselines: dict[str, dict] = {}
    started = time.perf_counter()
    for modality in args.modalities:
        for mode in args.modes:
            config = experiment_config(base, modality, mode)
            run_dir = args.out / f"{modality}-{mode}"
            print(f"[{modality}, fusion {mode}] training into {run_dir}", file=sys.stderr)
            train_experiment(config, store, run_dir, resume=not args.no_resume)
            evaluation = evaluate_experiment(run_dir, store)
            entry = {"modality": modality, "mode": mode, "run_dir": str(run_dir),
                     "training_seconds": {branch: training_seconds(run_dir, config, branch)
                                          for branch in config.training.branches},
                     "evaluation": {branch: value["summary"] for branch, value in evaluation["branches"].items()}}
            if modality not in baselines:
                baselines[modality] = fold_baselines(run_dir, store, modality=modality, label=config.data.label)
            if args.backends and "snn" in config.training.branches:
                entry["backends"] = backend_accuracy(run_dir, store, args.backends)
            experiments.append(entry)
    return {"config": str(args.config), "store": str(store), "experiments": experiments, "baselines": baselines,
            "paper_targets": PAPER_TARGETS, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(build_parser(), argv)
    if isinstance(args, int):
        return args
    configure_logging(args.verbose)
    if args.subjects < 10:
        print(f"error: --subjects {args.subjects} is too small; 5 folds need at least 10 subjects", file=sys.stderr)
        return 2
    try:
        results = run(args)
    except (ConfigError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run again to resume from the last finished epoch", file=sys.stderr)
        return 130

    args.out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(results)
    markdown = summary_markdown(results, rows)
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(args.out / "results.json", lambda temporary: Path(temporary).write_text(text))
    atomic_write(args.out / "results.md", lambda temporary: Path(temporary).write_text(markdown))
    plot_summary(rows, args.out / "summary.png")
    print(markdown)
    print(f"results: {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
