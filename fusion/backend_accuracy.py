"""Accuracy of trained SNN fold models when their NIR graph runs on each simulator backend.

For every fold of a trained run, the fold's ``PulmoSNN`` is written as a NIR graph
(``neuro.nir_io.model_to_nir``) and run by each backend on the rate-coded clips of that
fold's test subjects, with the same seeded spikes as ``fusion.evaluate`` uses.  The class
per clip is

- single-modal (fusion mode ``none``): the output neuron with most spikes, ties to the
  lower index, as ``neuro.model.predict_classes`` does;
- multi-modal: the fold's fusion head applied to the backend's ``lif3`` firing rates and
  the subject's metadata, so only the spiking part runs on the backend.

Each backend gets per-cycle and per-patient accuracy and F1 (mean and standard deviation
over folds) and its class agreement with the PyTorch model, which should be 1.0 for the
floating-point backends.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fusion import checkpoint as model_checkpoint
from fusion.evaluate import _true_labels, load_fold, read_run_config, restore_model
from fusion.loop import EVALUATION_EPOCH, load_cohort, prepare_inputs
from fusion.metrics import classification_metrics, summarise_folds
from neuro.backends import create_backend
from neuro.nir_io import model_to_nir

logger = logging.getLogger(__name__)

HIDDEN_LAYER = "lif3"
OUTPUT_LAYER = "lif_out"


def _backend_classes(model, run, features: torch.Tensor) -> np.ndarray:
    """Return the class per clip from one backend run of the fold's SNN."""
    if not model.fused:
        counts = run.spikes[OUTPUT_LAYER].sum(axis=0)
        return counts.argmax(axis=-1)
    rates = torch.from_numpy(run.spikes[HIDDEN_LAYER].mean(axis=0)).float()
    with torch.no_grad():
        logits = model.head(model.fusion(rates, features))
    return logits.argmax(dim=-1).numpy()


def backend_accuracy(run_dir: str | os.PathLike, store_path: str | os.PathLike, backends: list[str], *,
                     progress: bool = True) -> dict:
    """Score the SNN fold models of ``run_dir`` on each backend in ``backends``; return a dict by backend.

    Each entry has ``folds`` (metrics per fold, including ``agreement_with_pytorch``) and
    ``summary`` (``fusion.metrics.summarise_folds``).  Raises ValueError when the run did
    not train the SNN branch.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if "snn" not in config.training.branches:
        raise ValueError(f"{run_dir} has no SNN branch (training.branches = {list(config.training.branches)}); "
                         "train one with branches = [\"snn\"]")
    cohort = model_checkpoint.cohort_identity(store_path)
    arrays = load_cohort(store_path, config.data.modality, config.data.label)
    dt = config.snn.network.dt
    results: dict[str, dict] = {name: {"folds": []} for name in backends}

    folds = range(config.data.folds)
    for fold in tqdm(folds, desc="backends", unit="fold", file=sys.stderr, disable=not progress, leave=False):
        state, path = load_fold(run_dir, config, "snn", fold, cohort)
        model = restore_model(state, "snn", config, arrays.features.shape[1], path)
        index = arrays.indices(state["test_ids"])
        spikes = prepare_inputs("snn", config, arrays, index, fold=fold, epoch=EVALUATION_EPOCH, augment=False)
        features = arrays.features[index]
        labels = _true_labels(arrays, index)
        subjects = [arrays.subject_ids[i] for i in index]
        with torch.no_grad():
            pytorch_classes = model.classes(model(spikes, features)).numpy()

        graph = model_to_nir(model.snn)
        for name in backends:
            run = create_backend(name).run(graph, spikes.numpy(), dt)
            classes = _backend_classes(model, run, features)
            metrics = classification_metrics(subjects, labels, classes)
            metrics = {key: value for key, value in metrics.items() if isinstance(value, float)}
            metrics["agreement_with_pytorch"] = float(np.mean(classes == pytorch_classes))
            results[name]["folds"].append(metrics)
            logger.info("fold %d, %s: per-cycle accuracy %.3f, agreement with PyTorch %.3f", fold, name,
                        metrics["per_cycle_accuracy"], metrics["agreement_with_pytorch"])

    for entry in results.values():
        entry["summary"] = summarise_folds(entry["folds"])
    return results
