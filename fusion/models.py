"""The two trainable branches: the spiking classifier and the X3D-S regressor.

SNN branch (``SNNClassifier``)::

    spikes (T, B, 1, S, S) -> PulmoSNN -> lif_out spikes (T, B, 2) -> rates (B, 2) = counts / T
                                       \\-> lif3 spikes (T, B, hidden) -> firing rate per neuron (B, hidden)
                                            -> MetadataFusion(+ metadata (B, M)) -> Linear -> logits (B, 2)

``PulmoSNN`` is used unchanged, so its weights export to NIR and run on every backend.
With fusion mode ``none`` there is no head, and the class is the argmax of the output
spike counts (``neuro.model.predict_classes``).  Otherwise the class comes from the fused
logits.

X3D branch (``X3DRegressor``)::

    clip (B, C, F, S, S) -> X3D-S blocks -> head ProjectedPool -> features (B, 2048)
         -> MetadataFusion(+ metadata (B, M)) -> Linear -> standardised (pef, fev1_fvc) (B, 2)

Targets are standardised with the training fold's mean and standard deviation, which the
checkpoint stores; ``TARGETS`` gives the output order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from cnn.x3d import build_x3d_s, load_checkpoint
from fusion.attention import MetadataFusion
from fusion.config import ExperimentConfig
from neuro.model import PulmoSNN, predict_classes

logger = logging.getLogger(__name__)

TARGETS = ("pef", "fev1_fvc")
FEV1_FVC_INDEX = TARGETS.index("fev1_fvc")
X3D_FEATURES = 2048
MODALITY_CHANNELS = {"thermal": 1, "rgb": 3}


@dataclass
class SNNOutput:
    """Output of ``SNNClassifier``: output spikes (T, B, 2), rates (B, 2) and fused logits (B, 2) or None."""

    spikes: torch.Tensor
    rates: torch.Tensor
    logits: torch.Tensor | None


class SNNClassifier(nn.Module):
    """``PulmoSNN`` plus, unless fusion mode is ``none``, a metadata fusion head on the lif3 rates."""

    def __init__(self, config: ExperimentConfig, metadata_dim: int) -> None:
        super().__init__()
        self.rate_scale = config.snn.rate_scale
        self.snn = PulmoSNN(config.snn.network)
        self.fused = config.fusion.mode != "none"
        if self.fused:
            fusion = config.fusion
            self.fusion = MetadataFusion(config.snn.network.hidden, metadata_dim, embed_dim=fusion.embed_dim,
                                         heads=fusion.heads, mode=fusion.mode, dropout=fusion.dropout)
            self.head = nn.Linear(fusion.embed_dim, config.snn.network.n_classes)

    def forward(self, spikes: torch.Tensor, metadata: torch.Tensor) -> SNNOutput:
        if not self.fused:
            output = self.snn(spikes)
            return SNNOutput(output, output.mean(dim=0), None)
        output, records = self.snn(spikes, record=True)
        hidden_rates = records["lif3"].mean(dim=0)
        logits = self.head(self.fusion(hidden_rates, metadata))
        return SNNOutput(output, output.mean(dim=0), logits)

    def probabilities(self, output: SNNOutput) -> torch.Tensor:
        """Return class probabilities (B, 2): softmax of fused logits, or of scaled output rates."""
        logits = output.logits if output.logits is not None else output.rates * self.rate_scale
        return torch.softmax(logits, dim=-1)

    def classes(self, output: SNNOutput) -> torch.Tensor:
        """Return the class per sample: argmax of fused logits, or of output spike counts."""
        if output.logits is not None:
            return output.logits.argmax(dim=-1)
        return predict_classes(output.spikes)


class X3DRegressor(nn.Module):
    """X3D-S backbone with a metadata fusion head regressing standardised (pef, fev1_fvc)."""

    def __init__(self, config: ExperimentConfig, metadata_dim: int) -> None:
        super().__init__()
        channels = MODALITY_CHANNELS[config.data.modality]
        self.backbone = build_x3d_s(num_outputs=len(TARGETS), in_channels=channels, dropout_rate=config.x3d.dropout)
        if config.x3d.pretrained:
            result = load_checkpoint(self.backbone, config.x3d.pretrained)
            logger.info("loaded %d tensors of the pretrained X3D-S %s", len(result.loaded_keys),
                        config.x3d.pretrained)
        # The head's projection is replaced by the fusion head below.
        self.backbone.blocks[-1].proj = nn.Identity()
        fusion = config.fusion
        self.fusion = MetadataFusion(X3D_FEATURES, metadata_dim, embed_dim=fusion.embed_dim, heads=fusion.heads,
                                     mode=fusion.mode, dropout=fusion.dropout)
        self.regressor = nn.Linear(fusion.embed_dim, len(TARGETS))

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """Return the pooled pre-projection features (B, 2048) of clips (B, C, F, S, S)."""
        x = clips
        for block in self.backbone.blocks[:-1]:
            x = block(x)
        head = self.backbone.blocks[-1]
        x = head.pool(x)
        if getattr(head, "dropout", None) is not None:
            x = head.dropout(x)
        return x.flatten(start_dim=1)

    def forward(self, clips: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        return self.regressor(self.fusion(self.features(clips), metadata))


def build_branch(branch: str, config: ExperimentConfig, metadata_dim: int) -> nn.Module:
    """Build the ``"snn"`` or ``"x3d"`` branch, seeded by ``training.seed``."""
    torch.manual_seed(config.training.seed)
    if branch == "snn":
        return SNNClassifier(config, metadata_dim)
    if branch == "x3d":
        return X3DRegressor(config, metadata_dim)
    raise ValueError(f"branch = {branch!r} is invalid; it must be 'snn' or 'x3d'")
