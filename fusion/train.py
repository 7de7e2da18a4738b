"""Subject-wise k-fold training of the SNN classifier and the X3D-S regressor.

Output layout of ``train_experiment(config, store, out)``::

    out/config.json                         the configuration (ExperimentConfig.to_dict)
    out/folds.json                          cohort identity, clip shape, train and test subject ids per fold
    out/<modality>/<branch>/fold<k>/last.pt  model checkpoint, rewritten atomically after every epoch
    out/<modality>/<branch>/fold<k>/snn.pt   SNN weights for neuro.checkpoint.load_snn (SNN branch)

Folds are split by ``cohort.folds.subject_folds``, stratified by each subject's label.
A fold whose ``last.pt`` contains all epochs is skipped.  A fold with fewer epochs resumes
from its ``last.pt`` with ``resume=True``.  The resumed run ends with the same weights as
an uninterrupted one, because every random draw is seeded by (seed, fold, epoch, sample).
Class imbalance is handled by class-weighted losses (``training.balance_classes``).

An interrupted epoch is lost and trained again on resume.

Under ``torchrun --nproc_per_node=N -m fusion train ...`` each process trains on its
``DistributedSampler`` share of every global batch, DDP averages the gradients, and only
rank 0 writes files.  NOTE: X3D batch-norm statistics are computed per process, so an
X3D run under DDP differs slightly from a single-process run.  The SNN branch has no
batch norm and matches it to rounding.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from cohort.files import atomic_write
from cohort.folds import subject_folds
from fusion import checkpoint as model_checkpoint
from fusion.config import ConfigError, ExperimentConfig
from fusion.distributed import ProcessInfo, all_sum, barrier
from fusion.loop import CohortArrays, batch_loss, class_weights, load_cohort, prepare_inputs
from fusion.models import build_branch
from neuro.checkpoint import save_snn

logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    """One trained fold: where its checkpoint is, epochs done, training seconds in this run, last epoch's loss."""

    branch: str
    fold: int
    checkpoint: Path
    epochs: int
    seconds: float
    loss: float


@dataclass
class TrainResult:
    """All folds of ``train_experiment`` and its wall-clock seconds."""

    out_dir: Path
    folds: list[FoldResult] = field(default_factory=list)
    seconds: float = 0.0


def fold_dir(out_dir: str | os.PathLike, modality: str, branch: str, fold: int) -> Path:
    return Path(out_dir) / modality / branch / f"fold{fold}"


def split_folds(config: ExperimentConfig, arrays: CohortArrays) -> list[tuple[list[str], list[str]]]:
    """Split the cohort's subjects into ``data.folds`` folds, stratified by subject label."""
    labels = arrays.subject_labels()
    if config.data.folds > len(labels):
        raise ConfigError(f"data.folds = {config.data.folds} is invalid: it must be at most the number of subjects "
                          f"with {config.data.modality} clips ({len(labels)})")
    return subject_folds(list(labels), config.data.folds, seed=config.data.fold_seed, stratify_labels=labels)


def _write_json(path: Path, content: object) -> None:
    text = json.dumps(content, indent=2) + "\n"
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def _check_run_folder(config: ExperimentConfig, out_dir: Path, resume: bool) -> None:
    saved = out_dir / "config.json"
    if not (resume and saved.is_file()):
        return
    try:
        previous = ExperimentConfig.from_dict(json.loads(saved.read_text()))
    except (ValueError, OSError) as error:
        raise ConfigError(f"{saved} is not a readable configuration ({error}); choose another --out") from None
    if previous.hash() != config.hash():
        raise ConfigError(f"{out_dir} contains a run of another configuration; choose another --out or pass "
                          "--no-resume to overwrite it")


def train_experiment(config: ExperimentConfig, store_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                     resume: bool = True, process: ProcessInfo | None = None, stop_after: int | None = None,
                     progress: bool = True) -> TrainResult:
    """Train every configured branch on every fold and return where the checkpoints are.

    ``stop_after`` ends each fold after that many epochs in total (for example to
    simulate an interruption); a later call with ``resume=True`` continues from there.
    """
    process = process or ProcessInfo()
    out_dir = Path(out_dir)
    started = time.perf_counter()
    _check_run_folder(config, out_dir, resume)
    if "x3d" in config.training.branches and config.x3d.pretrained and not Path(config.x3d.pretrained).is_file():
        raise ConfigError(f"x3d.pretrained = {config.x3d.pretrained!r} is invalid: the file is not found; give the "
                          "path of a local X3D-S state dict or leave it empty to train from scratch")
    arrays = load_cohort(store_path, config.data.modality, config.data.label)
    folds = split_folds(config, arrays)
    cohort = model_checkpoint.cohort_identity(store_path)
    if process.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(out_dir / "config.json", config.to_dict())
        _write_json(out_dir / "folds.json", {"cohort": cohort, "clip_shape": list(arrays.clips.shape[1:]), "folds": [
            {"train": train_ids, "test": test_ids} for train_ids, test_ids in folds]})
    barrier(process)

    result = TrainResult(out_dir)
    for branch in config.training.branches:
        for fold, (train_ids, test_ids) in enumerate(folds):
            result.folds.append(train_fold(config, arrays, branch, fold, train_ids, test_ids, out_dir, cohort,
                                           resume=resume, process=process, stop_after=stop_after, progress=progress))
    result.seconds = time.perf_counter() - started
    return result


def _initial_state(path: Path, config: ExperimentConfig, cohort: str, resume: bool) -> dict | None:
    if not (resume and path.is_file()):
        return None
    state = model_checkpoint.load_checkpoint(path)
    if state["config_hash"] != config.hash():
        raise model_checkpoint.CheckpointError(f"{path} was trained with another configuration; choose another "
                                               "--out or pass --no-resume to overwrite it")
    if state["cohort"] != cohort:
        raise model_checkpoint.CheckpointError(f"{path} was trained on another cohort store; choose another --out "
                                               "or pass --no-resume to overwrite it")
    return state


def train_fold(config: ExperimentConfig, arrays: CohortArrays, branch: str, fold: int, train_ids: list[str],
               test_ids: list[str], out_dir: Path, cohort: str, *, resume: bool, process: ProcessInfo,
               stop_after: int | None = None, progress: bool = True) -> FoldResult:
    """Train one branch on one fold, checkpointing after every epoch; see ``train_experiment``."""
    training = config.training
    folder = fold_dir(out_dir, config.data.modality, branch, fold)
    path = folder / "last.pt"
    train_index = arrays.indices(train_ids)
    labels = arrays.labels[train_index]
    weights = class_weights(labels, training.balance_classes)
    targets = arrays.targets[train_index]
    target_mean = targets.mean(dim=0)
    target_std = targets.std(dim=0).clamp_min(1e-6) if len(targets) > 1 else torch.ones(targets.shape[1])

    model = build_branch(branch, config, arrays.features.shape[1]).to(process.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    state = _initial_state(path, config, cohort, resume)
    history: list[dict] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
    first_epoch = len(history)
    last_epoch = training.epochs if stop_after is None else min(training.epochs, stop_after)
    if first_epoch >= last_epoch:
        logger.info("%s fold %d: %d epochs already trained in %s", branch, fold, first_epoch, path)
        return FoldResult(branch, fold, path, first_epoch, 0.0, history[-1]["loss"] if history else float("nan"))

    if process.world_size > 1 and training.batch_size % process.world_size:
        raise ConfigError(f"training.batch_size = {training.batch_size} is invalid: it must be a multiple of the "
                          f"number of processes ({process.world_size})")
    local_batch = training.batch_size // process.world_size
    trainer = DistributedDataParallel(model) if process.distributed else model
    sampler = DistributedSampler(range(len(train_index)), num_replicas=process.world_size, rank=process.rank,
                                 shuffle=True, seed=training.seed + fold, drop_last=False)
    batches = -(-len(sampler) // local_batch)
    bar = tqdm(total=(last_epoch - first_epoch) * batches, desc=f"{branch} fold {fold}", unit="batch",
               file=sys.stderr, disable=not (progress and process.is_main), leave=False)
    standardise = (lambda values: (values - target_mean) / target_std)
    seconds = 0.0
    for epoch in range(first_epoch, last_epoch):
        started = time.perf_counter()
        seed = np.random.SeedSequence([training.seed, fold, epoch, 7]).generate_state(1)[0]
        torch.manual_seed(int(seed))  # dropout draws
        sampler.set_epoch(epoch)
        model.train()
        order = list(sampler)
        epoch_loss = 0.0
        for start in range(0, len(order), local_batch):
            chunk = train_index[order[start:start + local_batch]]
            inputs = prepare_inputs(branch, config, arrays, chunk, fold=fold, epoch=epoch, augment=True)
            global_count = all_sum(float(len(chunk)), process)
            loss_sum = batch_loss(branch, config, trainer, inputs.to(process.device),
                                  arrays.features[chunk].to(process.device), arrays.labels[chunk].to(process.device),
                                  standardise(arrays.targets[chunk]).to(process.device), weights.to(process.device))
            loss = loss_sum * process.world_size / global_count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += all_sum(float(loss_sum.detach()), process)
            bar.update(1)
        if not math.isfinite(epoch_loss):
            # Raised before saving, so last.pt keeps the last finite epoch.
            raise ValueError(f"{branch} fold {fold}, epoch {epoch + 1}: the training loss is {epoch_loss}; lower "
                             f"training.lr (now {config.training.lr:g}) or check the clips for extreme values")
        epoch_seconds = time.perf_counter() - started
        seconds += epoch_seconds
        history.append({"epoch": epoch + 1, "loss": epoch_loss / len(train_index), "seconds": epoch_seconds})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        if process.is_main:
            model_checkpoint.save_checkpoint(path, {
                "config": config.to_dict(), "config_hash": config.hash(), "cohort": cohort, "branch": branch,
                "fold": fold, "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "target_mean": target_mean.tolist(), "target_std": target_std.tolist(),
                "class_weights": weights.tolist(), "train_ids": list(train_ids), "test_ids": list(test_ids),
                "history": history,
            })
        barrier(process)
    bar.close()
    if process.is_main and branch == "snn":
        save_snn(model.snn, folder / "snn.pt")
    logger.info("%s fold %d: trained epochs %d-%d in %.1f s, loss %.4f", branch, fold, first_epoch + 1, last_epoch,
                seconds, history[-1]["loss"])
    return FoldResult(branch, fold, path, last_epoch, seconds, history[-1]["loss"])
