"""Random augmentation of one training clip.

A clip is a float tensor ``(C, T, H, W)`` as ``cohort.dataset.ClipDataset`` returns it:
thermal clips have C = 1 in degC, RGB clips have C = 3 with intensities in [0, 1].
``augment_clip`` applies, in this order:

1. temporal jitter: the frames move by an integer shift s drawn uniformly from
   [-temporal_jitter, temporal_jitter], ``out[t] = clip[clamp(t - s, 0, T - 1)]``, so the
   edge frame repeats where frames run out;
2. horizontal flip with probability ``flip_probability``;
3. thermal: one offset drawn uniformly from [-thermal_offset_c, thermal_offset_c] degC
   added to every pixel; RGB: every pixel multiplied by one factor drawn uniformly
   from [1 - brightness, 1 + brightness];
4. independent Gaussian noise per pixel with standard deviation ``noise_std``, in degC
   for thermal clips and in intensity units of [0, 1] for RGB clips.

RGB results are clipped to [0, 1]; thermal results are not clipped.  Every random draw
comes from the caller's ``torch.Generator``, so a seeded generator reproduces the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

logger = logging.getLogger(__name__)

MODALITY_CHANNELS = {"thermal": 1, "rgb": 3}


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of ``augment_clip``; the module docstring defines each step.

    Attributes:
        enabled: False makes ``augment_clip`` return its input unchanged.
        temporal_jitter: maximum shift in frames, either way (integer >= 0).
        flip_probability: probability of a horizontal flip, in [0, 1].
        thermal_offset_c: maximum offset in degC added to thermal clips (>= 0).
        brightness: maximum relative change of RGB intensity, in [0, 1).
        noise_std: standard deviation of the Gaussian noise, degC for thermal clips and
            intensity units of [0, 1] for RGB clips (>= 0).
    """

    enabled: bool = True
    temporal_jitter: int = 2
    flip_probability: float = 0.5
    thermal_offset_c: float = 1.0
    brightness: float = 0.1
    noise_std: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"AugmentConfig.enabled = {self.enabled!r} is invalid; it must be true or false")
        if isinstance(self.temporal_jitter, bool) or not isinstance(self.temporal_jitter, int) or self.temporal_jitter < 0:
            raise ValueError(
                f"AugmentConfig.temporal_jitter = {self.temporal_jitter!r} is invalid; it must be an integer >= 0 frames"
            )
        ranges = {
            "flip_probability": (0.0, 1.0, "in [0, 1]"),
            "thermal_offset_c": (0.0, math.inf, "a finite number >= 0 degC"),
            "brightness": (0.0, 1.0, "in [0, 1)"),
            "noise_std": (0.0, math.inf, "a finite number >= 0"),
        }
        for name, (low, high, allowed) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"AugmentConfig.{name} = {value!r} is invalid; it must be a number {allowed}")
            inside = math.isfinite(value) and low <= value <= high
            if name == "brightness":
                inside = inside and value < high
            if not inside:
                raise ValueError(f"AugmentConfig.{name} = {value!r} is invalid; it must be {allowed}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> AugmentConfig:
        """Build from a mapping such as a parsed YAML section; an unknown key raises ValueError naming it."""
        if not isinstance(values, Mapping):
            raise ValueError(f"augmentation settings must be a mapping of names to values, got {type(values).__name__}")
        known = [field.name for field in fields(cls)]
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ValueError(f"unknown augmentation settings {unknown}; known settings are {known}")
        return cls(**values)


def _check_clip(clip: torch.Tensor, modality: str) -> None:
    if modality not in MODALITY_CHANNELS:
        raise ValueError(f"modality = {modality!r} is invalid; it must be one of {tuple(MODALITY_CHANNELS)}")
    if not isinstance(clip, torch.Tensor):
        raise ValueError(f"clip must be a torch.Tensor, got {type(clip).__name__}")
    if not clip.is_floating_point():
        raise ValueError(f"clip has dtype {clip.dtype}; expected a floating-point dtype")
    channels = MODALITY_CHANNELS[modality]
    if clip.ndim != 4 or clip.shape[0] != channels or 0 in clip.shape:
        raise ValueError(f"{modality} clip has shape {tuple(clip.shape)}; expected ({channels}, T, H, W) with T, H, W >= 1")


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def augment_clip(clip: torch.Tensor, modality: str, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Return an augmented copy of ``clip`` (C, T, H, W) with the same shape and dtype.

    ``modality`` is ``"thermal"`` (C = 1, degC) or ``"rgb"`` (C = 3, [0, 1]).  With
    ``config.enabled`` False the input tensor itself is returned and ``generator`` is not
    used.  Raises ValueError for another modality, shape or a non-float dtype.
    """
    _check_clip(clip, modality)
    if not config.enabled:
        return clip
    n_frames, width = clip.shape[1], clip.shape[3]
    result = clip

    if config.temporal_jitter > 0:
        shift = int(torch.randint(-config.temporal_jitter, config.temporal_jitter + 1, (), generator=generator))
        if shift != 0:
            source = (torch.arange(n_frames, device=clip.device) - shift).clamp(0, n_frames - 1)
            result = result.index_select(1, source)

    if config.flip_probability > 0 and float(torch.rand((), generator=generator)) < config.flip_probability and width > 1:
        result = result.flip(3)

    if modality == "thermal" and config.thermal_offset_c > 0:
        result = result + _uniform(-config.thermal_offset_c, config.thermal_offset_c, generator)
    elif modality == "rgb" and config.brightness > 0:
        result = result * _uniform(1.0 - config.brightness, 1.0 + config.brightness, generator)

    if config.noise_std > 0:
        # The generator lives on the CPU, so the noise is drawn there and moved.
        noise = torch.randn(result.shape, generator=generator, dtype=torch.float32)
        result = result + config.noise_std * noise.to(device=result.device, dtype=result.dtype)

    if modality == "rgb":
        result = result.clamp(0.0, 1.0)
    if result is clip:
        result = clip.clone()
    return result.to(clip.dtype)
