"""Rate coding of video clips into input spikes for the SNN.

A clip is a float array shaped (frames, height, width) for thermal video (temperatures
in degrees Celsius or any intensity unit) or (frames, height, width, 3) for RGB.  Each
frame is scaled to [0, 1], averaged down to ``size x size`` (area interpolation) and
turned into ``steps_per_frame`` Bernoulli spike frames: a pixel of intensity p spikes
with probability p in each step.  The result is shaped (T, B, 1, size, size) with
``T = frames * steps_per_frame``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Temperature window mapped to firing probabilities 0..1 for thermal clips: it spans the room
# background (about 22 degC) to a mask warmed by exhaled air (up to about 40 degC).
THERMAL_WINDOW_C = (20.0, 40.0)

# ITU-R BT.601 luma weights, for RGB clips.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class RateEncoder:
    """Settings of the rate code.

    ``value_range`` is the (low, high) intensity mapped to 0 and 1; values outside are
    clipped.  None scales each clip by its own minimum and maximum.
    """

    size: int = 64
    steps_per_frame: int = 1
    value_range: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"RateEncoder.size = {self.size} is invalid; it must be >= 1")
        if self.steps_per_frame < 1:
            raise ValueError(f"RateEncoder.steps_per_frame = {self.steps_per_frame} is invalid; it must be >= 1")
        if self.value_range is not None and not self.value_range[1] > self.value_range[0]:
            raise ValueError(f"RateEncoder.value_range = {self.value_range} is invalid; high must exceed low")

    def intensities(self, clips: np.ndarray) -> torch.Tensor:
        """Scale and resize clips (B, F, H, W[, 3]) to firing probabilities (F, B, 1, size, size)."""
        clips = np.asarray(clips, dtype=np.float32)
        if clips.ndim == 5 and clips.shape[-1] == 3:
            clips = clips @ _LUMA
        if clips.ndim != 4:
            raise ValueError(
                f"expected clips shaped (B, frames, height, width) or (B, frames, height, width, 3), "
                f"got {clips.shape}"
            )
        if clips.shape[1] < 1 or clips.shape[2] < 1 or clips.shape[3] < 1:
            raise ValueError(f"clips must have at least one frame and one pixel, got shape {clips.shape}")
        if not np.isfinite(clips).all():
            raise ValueError("clips contain NaN or infinite values; clean or mask them before encoding")

        if self.value_range is None:
            low = clips.min(axis=(1, 2, 3), keepdims=True)
            high = clips.max(axis=(1, 2, 3), keepdims=True)
        else:
            low, high = self.value_range
        scaled = np.clip((clips - low) / np.maximum(high - low, 1e-12), 0.0, 1.0)

        frames = torch.from_numpy(scaled).transpose(0, 1).unsqueeze(2)  # (F, B, 1, H, W)
        n_frames, batch = frames.shape[:2]
        flat = frames.reshape(n_frames * batch, 1, *frames.shape[-2:])
        resized = torch.nn.functional.interpolate(flat, size=(self.size, self.size), mode="area")
        return resized.reshape(n_frames, batch, 1, self.size, self.size)

    def encode(self, clips: np.ndarray) -> np.ndarray:
        """Return Bernoulli spikes (T, B, 1, size, size) as float32 0/1, seeded by ``seed``."""
        probabilities = self.intensities(clips).repeat_interleave(self.steps_per_frame, dim=0)
        generator = torch.Generator().manual_seed(self.seed)
        spikes = torch.bernoulli(probabilities, generator=generator)
        return spikes.numpy().astype(np.float32)
