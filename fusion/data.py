"""Batches of clips turned into the inputs of the SNN and of the X3D network.

Input batches are float tensors ``(B, C, T, H, W)`` as ``ClipDataset`` items stack:
thermal C = 1 in degC, RGB C = 3 with intensities in [0, 1].

- ``snn_input`` rate-codes a batch with ``neuro.encoding.RateEncoder``: thermal degC are
  mapped linearly from ``THERMAL_WINDOW_C`` to a firing probability in [0, 1] (clipped),
  RGB is reduced to BT.601 luma in [0, 1].  Frames are area-resized to ``size`` and each
  frame gives ``steps_per_frame`` Bernoulli time steps.
- ``x3d_input`` resamples each clip to ``frames`` frames, resizes it to ``size`` and
  normalises it: thermal ``(degC - 30) / 5``, RGB ``(x - 0.45) / 0.225`` per channel,
  the Kinetics-400 mean and standard deviation that pytorchvideo's X3D models were
  trained with.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from neuro.encoding import THERMAL_WINDOW_C, RateEncoder

logger = logging.getLogger(__name__)

THERMAL_CENTER_C = 30.0
THERMAL_SCALE_C = 5.0
KINETICS_MEAN = 0.45
KINETICS_STD = 0.225
MODALITY_CHANNELS = {"thermal": 1, "rgb": 3}


def _check_batch(clips: torch.Tensor, modality: str) -> None:
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality = {modality!r} is invalid; it must be one of {tuple(MODALITY_CHANNELS)}")
    if not isinstance(clips, torch.Tensor):
        raise ValueError(f"clips must be a torch.Tensor, got {type(clips).__name__}")
    channels = MODALITY_CHANNELS[modality]
    if clips.ndim != 5 or clips.shape[1] != channels or 0 in clips.shape:
        raise ValueError(
            f"{modality} clips have shape {tuple(clips.shape)}; expected (B, {channels}, T, H, W) with every size >= 1"
        )
    if not clips.is_floating_point():
        raise ValueError(f"clips have dtype {clips.dtype}; expected a floating-point dtype")


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} = {value!r} is invalid; it must be an integer >= 1")


def snn_input(
    clips: torch.Tensor,
    modality: str,
    *,
    size: int,
    steps_per_frame: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rate-code ``clips`` (B, C, T, H, W) into float32 0/1 spikes (T * steps_per_frame, B, 1, size, size).

    Spikes are drawn on the CPU with ``generator`` (the global generator when None) and
    returned on the device of ``clips``.  Non-finite values raise ValueError.
    """
    _check_batch(clips, modality)
    _check_positive("size", size)
    _check_positive("steps_per_frame", steps_per_frame)
    # RateEncoder takes numpy (B, T, H, W) or (B, T, H, W, 3).
    array = clips.detach().to("cpu", torch.float32).numpy()
    if modality == "thermal":
        array = array[:, 0]
        value_range = THERMAL_WINDOW_C
    else:
        array = np.moveaxis(array, 1, -1)
        value_range = (0.0, 1.0)
    encoder = RateEncoder(size=size, steps_per_frame=steps_per_frame, value_range=value_range)
    probabilities = encoder.intensities(array).repeat_interleave(steps_per_frame, dim=0)
    spikes = torch.bernoulli(probabilities, generator=generator)
    return spikes.to(device=clips.device, dtype=torch.float32)


def x3d_input(clips: torch.Tensor, modality: str, *, size: int, frames: int) -> torch.Tensor:
    """Return ``clips`` (B, C, T, H, W) as normalised float32 X3D input (B, C, frames, size, size).

    Frame k of the output is input frame ``round(k * (T - 1) / (frames - 1))`` (frame 0
    when ``frames`` is 1), so frames repeat when ``frames`` > T.  Frames shrink with area
    averaging and grow with bilinear interpolation.  The module docstring gives the
    normalisation.  Non-finite values raise ValueError.
    """
    _check_batch(clips, modality)
    _check_positive("size", size)
    _check_positive("frames", frames)
    if not torch.isfinite(clips).all():
        raise ValueError("clips contain NaN or infinite values; clean or mask them before building X3D input")
    batch, channels, n_frames, height, width = clips.shape
    picks = torch.from_numpy(np.rint(np.linspace(0, n_frames - 1, frames)).astype(np.int64)).to(clips.device)
    sampled = clips.to(torch.float32).index_select(2, picks)

    if (height, width) != (size, size):
        flat = sampled.transpose(1, 2).reshape(batch * frames, channels, height, width)
        if size <= min(height, width):
            flat = F.interpolate(flat, size=(size, size), mode="area")
        else:
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
        sampled = flat.reshape(batch, frames, channels, size, size).transpose(1, 2)

    if modality == "thermal":
        normalised = (sampled - THERMAL_CENTER_C) / THERMAL_SCALE_C
    else:
        normalised = (sampled - KINETICS_MEAN) / KINETICS_STD
    return normalised.contiguous()
