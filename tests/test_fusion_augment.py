"""Clip augmentation: each step's effect, reproducibility and config validation."""

from __future__ import annotations

import pytest
import torch

from fusion.augment import AugmentConfig, augment_clip

ONLY_JITTER = AugmentConfig(temporal_jitter=2, flip_probability=0.0, thermal_offset_c=0.0, brightness=0.0, noise_std=0.0)
NOTHING = AugmentConfig(temporal_jitter=0, flip_probability=0.0, thermal_offset_c=0.0, brightness=0.0, noise_std=0.0)


def ramp_clip(frames: int = 6, channels: int = 1) -> torch.Tensor:
    """Return a clip whose frame t has the value 25 + t, plus 0.01 times the column index."""
    time = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    column = torch.arange(5, dtype=torch.float32).view(1, 1, 1, 5) / 100.0
    return (25.0 + time + column).expand(channels, frames, 4, 5).clone()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_disabled_returns_input():
    clip = ramp_clip()
    assert augment_clip(clip, "thermal", AugmentConfig(enabled=False), generator(0)) is clip


def test_same_seed_same_result():
    clip = ramp_clip()
    first = augment_clip(clip, "thermal", AugmentConfig(), generator(3))
    second = augment_clip(clip, "thermal", AugmentConfig(), generator(3))
    other = augment_clip(clip, "thermal", AugmentConfig(), generator(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert first.shape == clip.shape
    assert first.dtype == clip.dtype


def test_no_op_config_copies():
    clip = ramp_clip()
    result = augment_clip(clip, "thermal", NOTHING, generator(0))
    assert torch.equal(result, clip)
    assert result is not clip


def test_temporal_jitter_repeats_edge():
    clip = ramp_clip(frames=6)
    shifts = set()
    for seed in range(40):
        result = augment_clip(clip, "thermal", ONLY_JITTER, generator(seed))
        frame_values = result[0, :, 0, 0] - 25.0
        shift = int(round(float(frame_values[3] - 3.0))) * -1
        expected = (torch.arange(6) - shift).clamp(0, 5).float()
        assert torch.equal(frame_values, expected)
        shifts.add(shift)
    assert shifts == {-2, -1, 0, 1, 2}


def test_flip_mirrors_width():
    clip = ramp_clip()
    config = AugmentConfig(temporal_jitter=0, flip_probability=1.0, thermal_offset_c=0.0, noise_std=0.0)
    assert torch.equal(augment_clip(clip, "thermal", config, generator(0)), clip.flip(3))
    flips = sum(
        not torch.equal(augment_clip(clip, "thermal", AugmentConfig(temporal_jitter=0, thermal_offset_c=0.0,
                                                                     noise_std=0.0), generator(seed)), clip)
        for seed in range(200)
    )
    assert 70 <= flips <= 130


def test_thermal_offset_is_uniform_shift():
    clip = ramp_clip()
    config = AugmentConfig(temporal_jitter=0, flip_probability=0.0, thermal_offset_c=1.0, noise_std=0.0)
    offsets = []
    for seed in range(200):
        difference = augment_clip(clip, "thermal", config, generator(seed)) - clip
        assert torch.allclose(difference, difference.flatten()[0].expand_as(difference), atol=1e-5)
        offsets.append(float(difference.flatten()[0]))
    assert min(offsets) >= -1.0
    assert max(offsets) <= 1.0
    assert abs(sum(offsets) / len(offsets)) < 0.1
    assert max(offsets) - min(offsets) > 1.5


def test_rgb_brightness_scales_and_clips():
    clip = torch.full((3, 4, 6, 6), 0.5)
    config = AugmentConfig(temporal_jitter=0, flip_probability=0.0, brightness=0.1, noise_std=0.0)
    factors = [float(augment_clip(clip, "rgb", config, generator(seed)).mean() / 0.5) for seed in range(100)]
    assert min(factors) >= 0.9
    assert max(factors) <= 1.1
    assert max(factors) - min(factors) > 0.15
    bright = torch.ones(3, 4, 6, 6)
    result = augment_clip(bright, "rgb", AugmentConfig(temporal_jitter=0, brightness=0.1, noise_std=0.05), generator(1))
    assert float(result.max()) <= 1.0
    assert float(result.min()) >= 0.0
    assert float(result.min()) < 1.0


def test_noise_std_in_clip_units():
    clip = torch.full((1, 8, 32, 32), 30.0)
    config = AugmentConfig(temporal_jitter=0, flip_probability=0.0, thermal_offset_c=0.0, noise_std=0.2)
    noise = augment_clip(clip, "thermal", config, generator(0)) - clip
    assert float(noise.std()) == pytest.approx(0.2, rel=0.05)
    assert abs(float(noise.mean())) < 0.01


def test_dtype_kept_for_float64():
    clip = ramp_clip().double()
    result = augment_clip(clip, "thermal", AugmentConfig(), generator(0))
    assert result.dtype == torch.float64


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temporal_jitter", -1, "temporal_jitter = -1 is invalid"),
        ("temporal_jitter", 1.5, "temporal_jitter = 1.5 is invalid"),
        ("flip_probability", 1.5, r"flip_probability = 1.5 is invalid; it must be in \[0, 1\]"),
        ("thermal_offset_c", -0.1, "thermal_offset_c = -0.1 is invalid"),
        ("brightness", 1.0, r"brightness = 1.0 is invalid; it must be in \[0, 1\)"),
        ("noise_std", float("nan"), "noise_std = nan is invalid"),
        ("enabled", "yes", "enabled = 'yes' is invalid"),
    ],
)
def test_config_rejects_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})


def test_from_dict_rejects_unknown_key():
    assert AugmentConfig.from_dict({"noise_std": 0.1, "temporal_jitter": 1}) == AugmentConfig(noise_std=0.1, temporal_jitter=1)
    with pytest.raises(ValueError, match=r"unknown augmentation settings \['flip_prob'\]"):
        AugmentConfig.from_dict({"flip_prob": 0.5})


@pytest.mark.parametrize(
    ("clip", "modality", "message"),
    [
        (torch.zeros(3, 4, 5, 5), "thermal", r"thermal clip has shape \(3, 4, 5, 5\); expected \(1, T, H, W\)"),
        (torch.zeros(1, 4, 5, 5), "rgb", r"rgb clip has shape \(1, 4, 5, 5\); expected \(3, T, H, W\)"),
        (torch.zeros(1, 4, 5), "thermal", r"expected \(1, T, H, W\)"),
        (torch.zeros(1, 4, 5, 5, dtype=torch.uint8), "thermal", "dtype torch.uint8"),
        (torch.zeros(1, 4, 5, 5), "depth", "modality = 'depth' is invalid"),
    ],
)
def test_bad_clip_rejected(clip, modality, message):
    with pytest.raises(ValueError, match=message):
        augment_clip(clip, modality, AugmentConfig(), generator(0))
