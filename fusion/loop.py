"""Cohort arrays, batch preparation, losses, one training epoch and inference for both branches.

Every random draw of a sample (augmentation and rate coding) comes from a generator
seeded by ``(training seed, fold, epoch, sample index)``.  A sample therefore gets the
same draws whichever process or batch it lands in, which makes a DDP run equal a
single-process run with the same global batch, and a resumed run equal an
uninterrupted one.

Loss of a global batch of n samples with class weights w (1 when balancing is off)::

    snn:  sum_i w[y_i] * (snn_loss_weight * CE(rate_scale * rates_i, y_i)
                          + fusion_loss_weight * CE(logits_i, y_i)) / n
    x3d:  sum_i w[y_i] * (pef_loss_weight * (p_i - t_i)^2 + fev1_fvc_loss_weight * (r_i - s_i)^2) / n

with regression targets standardised by the training fold's mean and standard deviation.
Each process sums over its share and divides by the global n; DDP averages gradients
over processes, so the loss is multiplied by the number of processes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cohort.dataset import ClipDataset
from cohort.store_format import FIXED_RATIO
from fusion.augment import augment_clip
from fusion.config import ExperimentConfig
from fusion.data import snn_input, x3d_input
from fusion.models import FEV1_FVC_INDEX, TARGETS

logger = logging.getLogger(__name__)

EVALUATION_EPOCH = -1


@dataclass
class CohortArrays:
    """All clips of one modality in memory, in ``ClipDataset`` order.

    ``clips`` (N, C, T, H, W) float32, ``features`` (N, M), ``labels`` (N,) int64,
    ``targets`` (N, 2) float32 in ``TARGETS`` order, ``subject_ids`` one id per clip.
    """

    clips: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    subject_ids: list[str]

    def indices(self, subjects: list[str]) -> np.ndarray:
        chosen = set(subjects)
        return np.array([i for i, subject_id in enumerate(self.subject_ids) if subject_id in chosen], dtype=np.int64)

    def subject_labels(self) -> dict[str, int]:
        """Return one label per subject: 1 when at least half of its clips are labelled abnormal."""
        ids = np.array(self.subject_ids)
        labels = self.labels.numpy()
        return {subject_id: int(labels[ids == subject_id].mean() >= 0.5) for subject_id in sorted(set(self.subject_ids))}


def load_cohort(store_path, modality: str, label: str) -> CohortArrays:
    """Read every ``modality`` clip of the store into memory."""
    dataset = ClipDataset(store_path, modality=modality, label=label)
    try:
        items = [dataset[index] for index in range(len(dataset))]
    finally:
        dataset.close()
    return CohortArrays(
        clips=torch.stack([item[0] for item in items]),
        features=torch.stack([item[1] for item in items]),
        labels=torch.stack([item[2] for item in items]),
        targets=torch.stack([torch.stack([item[3][name] for name in TARGETS]) for item in items]),
        subject_ids=dataset.clip_subject_ids(),
    )


def class_weights(labels: torch.Tensor, balance: bool) -> torch.Tensor:
    """Return per-class loss weights ``n / (2 * n_class)`` (ones without ``balance`` or with an empty class)."""
    counts = torch.bincount(labels, minlength=2).double()
    if not balance or (counts == 0).any():
        return torch.ones(2)
    return (counts.sum() / (2.0 * counts)).float()


def sample_generator(seed: int, fold: int, epoch: int, index: int) -> torch.Generator:
    """Return a CPU generator seeded by the training seed, fold, epoch and sample index."""
    state = np.random.SeedSequence([seed, fold, epoch + 1, int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def prepare_inputs(branch: str, config: ExperimentConfig, arrays: CohortArrays, indices, *, fold: int, epoch: int,
                   augment: bool) -> torch.Tensor:
    """Augment (training only) and encode clips ``indices``: SNN spikes (T, B, 1, S, S) or X3D input (B, C, F, S, S)."""
    modality = config.data.modality
    clips = []
    spikes = []
    for index in indices:
        generator = sample_generator(config.training.seed, fold, epoch, index)
        clip = arrays.clips[index]
        if augment:
            clip = augment_clip(clip, modality, config.augment, generator)
        if branch == "snn":
            spikes.append(snn_input(clip.unsqueeze(0), modality, size=config.snn.network.input_size,
                                    steps_per_frame=config.snn.steps_per_frame, generator=generator))
        else:
            clips.append(clip)
    if branch == "snn":
        return torch.cat(spikes, dim=1)
    return x3d_input(torch.stack(clips), modality, size=config.x3d.size, frames=config.x3d.frames)


def batch_loss(branch: str, config: ExperimentConfig, model, inputs: torch.Tensor, features: torch.Tensor,
               labels: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Return the weighted loss summed over the batch (divide by the global batch size)."""
    training = config.training
    sample_weights = weights[labels]
    if branch == "snn":
        output = model(inputs, features)
        scale = config.snn.rate_scale
        per_sample = training.snn_loss_weight * F.cross_entropy(output.rates * scale, labels, reduction="none")
        if output.logits is not None:
            per_sample = per_sample + training.fusion_loss_weight * F.cross_entropy(output.logits, labels,
                                                                                    reduction="none")
    else:
        predicted = model(inputs, features)
        squared = (predicted - targets) ** 2
        per_sample = training.pef_loss_weight * squared[:, 0] + training.fev1_fvc_loss_weight * squared[:, 1]
    return (sample_weights * per_sample).sum()


@dataclass
class Predictions:
    """Per-clip predictions of one fold model: classes (N,), abnormal probability (N,), regression (N, 2) or None."""

    classes: np.ndarray
    probabilities: np.ndarray
    regression: np.ndarray | None


@torch.no_grad()
def predict(branch: str, config: ExperimentConfig, model, arrays: CohortArrays, indices, *, fold: int,
            target_mean: torch.Tensor, target_std: torch.Tensor, batch_size: int = 16) -> Predictions:
    """Run ``model`` on clips ``indices`` without augmentation; rate coding is seeded per clip.

    For the X3D branch the class is FEV1/FVC < 0.70 on the predicted ratio, and the
    probability is 1 for that class and 0 otherwise (the regressor gives no probability).
    """
    model.eval()
    classes, probabilities, regression = [], [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        inputs = prepare_inputs(branch, config, arrays, chunk, fold=fold, epoch=EVALUATION_EPOCH, augment=False)
        features = arrays.features[chunk]
        if branch == "snn":
            output = model(inputs, features)
            classes.append(model.classes(output).numpy())
            probabilities.append(model.probabilities(output)[:, 1].numpy())
        else:
            values = model(inputs, features) * target_std + target_mean
            regression.append(values.numpy())
            abnormal = (values[:, FEV1_FVC_INDEX] < FIXED_RATIO).numpy()
            classes.append(abnormal.astype(np.int64))
            probabilities.append(abnormal.astype(np.float64))
    return Predictions(np.concatenate(classes), np.concatenate(probabilities),
                       np.concatenate(regression) if regression else None)
