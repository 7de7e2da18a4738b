"""SNN rate coding and X3D input of clip batches: scaling, resizing, sampling and shape checks."""

from __future__ import annotations

import pytest
import torch

from fusion.data import THERMAL_WINDOW_C, snn_input, x3d_input


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_thermal_window_edges():
    assert THERMAL_WINDOW_C == (20.0, 40.0)
    cold = torch.full((2, 1, 3, 8, 8), 18.0)
    hot = torch.full((2, 1, 3, 8, 8), 41.0)
    assert float(snn_input(cold, "thermal", size=4, generator=generator(0)).sum()) == 0.0
    assert float(snn_input(hot, "thermal", size=4, generator=generator(0)).mean()) == 1.0


def test_thermal_rate_and_shape():
    clips = torch.full((2, 1, 5, 16, 16), 25.0)  # (25 - 20) / 20 = 0.25
    spikes = snn_input(clips, "thermal", size=8, steps_per_frame=3, generator=generator(0))
    assert spikes.shape == (15, 2, 1, 8, 8)
    assert spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    assert float(spikes.mean()) == pytest.approx(0.25, abs=0.03)


def test_area_resize_keeps_halves():
    clips = torch.full((1, 1, 2, 8, 8), 20.0)
    clips[..., 4:] = 40.0
    spikes = snn_input(clips, "thermal", size=4, generator=generator(0))
    assert float(spikes[..., :2].sum()) == 0.0
    assert float(spikes[..., 2:].mean()) == 1.0


def test_rgb_luma_rate():
    clips = torch.zeros(4, 3, 10, 8, 8)
    clips[:, 0] = 1.0  # pure red: BT.601 luma 0.299
    spikes = snn_input(clips, "rgb", size=8, generator=generator(1))
    assert spikes.shape == (10, 4, 1, 8, 8)
    assert float(spikes.mean()) == pytest.approx(0.299, abs=0.03)


def test_generator_reproduces_spikes():
    clips = torch.rand(2, 3, 4, 8, 8)
    first = snn_input(clips, "rgb", size=4, generator=generator(5))
    second = snn_input(clips, "rgb", size=4, generator=generator(5))
    other = snn_input(clips, "rgb", size=4, generator=generator(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_x3d_thermal_normalisation():
    clips = torch.full((1, 1, 4, 8, 8), 35.0)
    clips[..., 0, :, :] = 30.0
    result = x3d_input(clips, "thermal", size=8, frames=4)
    assert result.shape == (1, 1, 4, 8, 8)
    assert result.dtype == torch.float32
    assert float(result[0, 0, 0].abs().max()) == 0.0
    assert torch.allclose(result[0, 0, 1:], torch.ones(3, 8, 8))


def test_x3d_rgb_kinetics_normalisation():
    clips = torch.full((2, 3, 4, 6, 6), 0.45)
    clips[:, 1] = 0.675  # 0.45 + 0.225
    result = x3d_input(clips, "rgb", size=6, frames=4)
    assert float(result[:, 0].abs().max()) < 1e-6
    assert torch.allclose(result[:, 1], torch.ones(2, 4, 6, 6))


def test_x3d_uniform_frame_sampling():
    frame_index = torch.arange(10, dtype=torch.float32).view(1, 1, 10, 1, 1)
    clips = (30.0 + frame_index).expand(1, 1, 10, 4, 4)
    result = x3d_input(clips, "thermal", size=4, frames=4)
    picked = result[0, 0, :, 0, 0] * 5.0
    assert picked.tolist() == pytest.approx([0.0, 3.0, 6.0, 9.0])
    more = x3d_input(clips[:, :, :3], "thermal", size=4, frames=5)[0, 0, :, 0, 0] * 5.0
    assert more.tolist() == pytest.approx([0.0, 0.0, 1.0, 2.0, 2.0])


def test_x3d_area_and_bilinear_resize():
    clips = torch.full((1, 1, 1, 4, 4), 30.0)
    clips[..., 0, 0] = 40.0  # area averaging: (40 + 3 * 30) / 4 = 32.5 degC in the top-left output pixel
    small = x3d_input(clips, "thermal", size=2, frames=1)[0, 0, 0]
    assert small.flatten().tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])
    large = x3d_input(torch.full((1, 1, 2, 4, 4), 32.5), "thermal", size=8, frames=2)
    assert large.shape == (1, 1, 2, 8, 8)
    assert torch.allclose(large, torch.full_like(large, 0.5))


@pytest.mark.parametrize(
    ("clips", "modality", "message"),
    [
        (torch.zeros(2, 3, 4, 8, 8), "thermal", r"thermal clips have shape \(2, 3, 4, 8, 8\); expected \(B, 1, T, H, W\)"),
        (torch.zeros(2, 1, 4, 8, 8), "rgb", r"expected \(B, 3, T, H, W\)"),
        (torch.zeros(1, 4, 8, 8), "thermal", r"shape \(1, 4, 8, 8\)"),
        (torch.zeros(2, 1, 0, 8, 8), "thermal", "every size >= 1"),
        (torch.zeros(2, 1, 4, 8, 8, dtype=torch.uint8), "thermal", "dtype torch.uint8"),
        (torch.zeros(2, 1, 4, 8, 8), "depth", "modality = 'depth' is invalid"),
    ],
)
def test_bad_batch_rejected(clips, modality, message):
    with pytest.raises(ValueError, match=message):
        snn_input(clips, modality, size=4)
    with pytest.raises(ValueError, match=message):
        x3d_input(clips, modality, size=4, frames=2)


def test_bad_sizes_and_values_rejected():
    clips = torch.full((1, 1, 2, 4, 4), 30.0)
    with pytest.raises(ValueError, match="size = 0 is invalid"):
        snn_input(clips, "thermal", size=0)
    with pytest.raises(ValueError, match="steps_per_frame = 0 is invalid"):
        snn_input(clips, "thermal", size=4, steps_per_frame=0)
    with pytest.raises(ValueError, match="frames = 0 is invalid"):
        x3d_input(clips, "thermal", size=4, frames=0)
    clips[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        snn_input(clips, "thermal", size=4)
    with pytest.raises(ValueError, match="NaN"):
        x3d_input(clips, "thermal", size=4, frames=2)
