"""Fusion of a video feature vector with subject metadata.

Data flow of ``MetadataFusion`` (B = batch, V = video_dim, M = metadata_dim, E = embed_dim)::

    attention:  video (B, V) -> Linear V->E ----------------> video token    (B, 1, E)
                metadata (B, M) -> m_i * w_i + b_i, i < M ---> metadata tokens (B, M, E)
                tokens (B, 1 + M, E) -> MultiheadAttention(E, heads), residual, LayerNorm
                -> mean over tokens -> ReLU                   -> fused (B, E)
    concat:     [video, metadata] (B, V + M) -> Linear -> ReLU -> fused (B, E)
    none:       video (B, V) -> Linear V->E -> ReLU            -> fused (B, E), metadata ignored

Each metadata feature gets its own learned token direction ``w_i`` and offset ``b_i``, so
attention can weigh, for example, age against smoking status per sample.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

FUSION_MODES = ("attention", "concat", "none")


class MetadataFusion(nn.Module):
    """Combine video features (B, video_dim) with metadata (B, metadata_dim) into (B, embed_dim)."""

    def __init__(self, video_dim: int, metadata_dim: int, *, embed_dim: int, heads: int, mode: str,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"mode = {mode!r} is invalid; it must be one of {FUSION_MODES}")
        for name, value in (("video_dim", video_dim), ("metadata_dim", metadata_dim), ("embed_dim", embed_dim),
                            ("heads", heads)):
            if value < 1:
                raise ValueError(f"{name} = {value!r} is invalid; it must be >= 1")
        if embed_dim % heads:
            raise ValueError(f"embed_dim = {embed_dim} is invalid; it must be a multiple of heads = {heads}")
        self.mode = mode
        self.video_dim = video_dim
        self.metadata_dim = metadata_dim
        self.out_dim = embed_dim

        if mode == "attention":
            self.video_token = nn.Linear(video_dim, embed_dim)
            self.metadata_weight = nn.Parameter(torch.randn(metadata_dim, embed_dim) / embed_dim ** 0.5)
            self.metadata_bias = nn.Parameter(torch.zeros(metadata_dim, embed_dim))
            # No projection biases: the key bias gets an exactly zero gradient (softmax ignores a constant
            # shift), so AdamW would turn rounding noise in it into full-size, run-dependent updates.
            self.attention = nn.MultiheadAttention(embed_dim, heads, dropout=dropout, bias=False, batch_first=True)
            self.norm = nn.LayerNorm(embed_dim)
        elif mode == "concat":
            self.project = nn.Linear(video_dim + metadata_dim, embed_dim)
        else:
            self.project = nn.Linear(video_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, video: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        if video.dim() != 2 or video.shape[1] != self.video_dim:
            raise ValueError(f"video features must be shaped (B, {self.video_dim}), got {tuple(video.shape)}")
        if metadata.shape != (video.shape[0], self.metadata_dim):
            raise ValueError(f"metadata must be shaped ({video.shape[0]}, {self.metadata_dim}), "
                             f"got {tuple(metadata.shape)}")

        if self.mode == "attention":
            video_token = self.video_token(video).unsqueeze(1)
            metadata_tokens = metadata.unsqueeze(-1) * self.metadata_weight + self.metadata_bias
            tokens = torch.cat([video_token, metadata_tokens], dim=1)

            attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
            tokens = self.norm(tokens + self.dropout(attended))
            fused = tokens.mean(dim=1)
        elif self.mode == "concat":
            fused = self.project(torch.cat([video, metadata], dim=1))
        else:
            fused = self.project(video)
        return self.dropout(torch.relu(fused))
