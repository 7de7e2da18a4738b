"""Tests of the synthetic thermal clip generator and its flow-curve model."""

from __future__ import annotations


import numpy as np
import pytest

from cohort import (
    ClipSpec,
    FaceLayout,
    fit_forced_expiration,
    from_time_constants,
    generate_clips,
    stack_clips,
)

SMALL = ClipSpec(size=64)


@pytest.fixture(scope="module")
def default_clips():
    return generate_clips(8, seed=7)


def _mask_core(clip, layout: FaceLayout) -> np.ndarray:
    """Mean temperature per frame of a box well inside the mask ellipse, degC."""
    size = clip.frames.shape[-1]
    center_x = int(layout.mask_center[0] * size)
    center_y = int(layout.mask_center[1] * size)
    half_x = int(0.4 * layout.mask_semi_axes[0] * size)
    half_y = int(0.4 * layout.mask_semi_axes[1] * size)
    box = clip.frames[:, center_y - half_y : center_y + half_y + 1, center_x - half_x : center_x + half_x + 1]
    return box.mean(axis=(1, 2))


def test_same_seed_same_clips():
    first = generate_clips(3, seed=11, spec=SMALL)
    second = generate_clips(3, seed=11, spec=SMALL)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.pef == b.pef
        assert a.fev1 == b.fev1
        assert a.subject_id == b.subject_id


def test_different_seeds_differ():
    first = generate_clips(2, seed=1, spec=SMALL)
    second = generate_clips(2, seed=2, spec=SMALL)
    assert not np.array_equal(first[0].frames, second[0].frames)
    assert first[0].pef != second[0].pef


def test_default_shapes_and_dtypes(default_clips):
    assert len(default_clips) == 8
    for clip in default_clips:
        assert clip.frames.shape == (30, 224, 224)
        assert clip.frames.dtype == np.float32
        assert clip.mask_rise_k.shape == (30,)
        assert clip.fps == pytest.approx(4.35)
        assert np.isfinite(clip.frames).all()


def test_temperatures_in_physical_range(default_clips):
    for clip in default_clips:
        # Room 22-24 degC minus drift and noise, and a mask at most ~11 K above a 25 degC rest.
        assert clip.frames.min() > 21.0
        assert clip.frames.max() < 40.0


def test_label_matches_ratio(default_clips):
    for clip in generate_clips(40, seed=5, spec=SMALL, clips_per_subject=4) + default_clips:
        assert clip.abnormal == (clip.fev1_fvc < 0.70)
        assert clip.fev1_fvc == pytest.approx(clip.fev1 / clip.fvc)


def test_both_classes_about_half():
    clips = generate_clips(40, seed=5, spec=SMALL, clips_per_subject=4)
    abnormal = sum(clip.abnormal for clip in clips)
    assert abnormal == 20


def test_subjects_have_several_clips(default_clips):
    ids = [clip.subject_id for clip in default_clips]
    assert ids == [0, 0, 1, 1, 2, 2, 3, 3]
    for first, second in zip(default_clips[0::2], default_clips[1::2]):
        assert first.abnormal == second.abnormal
        assert first.fvc != second.fvc


def test_mask_warms_during_blow(default_clips):
    layout = FaceLayout()
    for clip in default_clips:
        core = _mask_core(clip, layout)
        before = core[0]
        onset_frame = int(np.ceil(clip.blow_onset_s * clip.fps))
        peak = core[onset_frame:].max()
        # The smallest rise in 400 clips of seed 3 was 1.0 K, and NETD noise averages out over the box.
        assert peak - before > 0.5
        assert peak - before == pytest.approx(clip.mask_rise_k.max(), abs=0.1)


def test_mask_cools_after_peak():
    spec = ClipSpec(n_frames=60, size=32, fps=2.0)
    for clip in generate_clips(4, seed=9, spec=spec):
        peak_index = int(np.argmax(clip.mask_rise_k))
        assert peak_index < 59
        assert clip.mask_rise_k[-1] < clip.mask_rise_k[peak_index]


def test_face_warmer_than_background(default_clips):
    clip = default_clips[0]
    first = clip.frames[0]
    face = first[int(0.30 * 224), 112]
    corner = first[5, 5]
    assert face - corner > 8.0


def test_fitted_curve_matches_targets():
    curve = fit_forced_expiration(fvc=4.2, fev1=3.3, pef=7.5, tau_slow=1.8, tau_rise=0.03)
    t = np.linspace(0.0, 1.0, 200_001)
    assert np.trapz(curve.flow(t), t) == pytest.approx(3.3, rel=0.02)
    assert curve.fev1 == pytest.approx(3.3, rel=1e-6)
    assert curve.pef == pytest.approx(7.5, rel=1e-4)
    assert curve.volume(60.0) == pytest.approx(4.2, rel=1e-6)


def test_clip_truth_matches_flow_curve(default_clips):
    t = np.linspace(0.0, 1.0, 200_001)
    for clip in default_clips:
        flow = clip.flow_curve.flow(t)
        assert np.trapz(flow, t) == pytest.approx(clip.fev1, rel=0.02)
        assert flow.max() == pytest.approx(clip.pef, rel=1e-3)
        assert clip.flow_curve.volume(60.0) == pytest.approx(clip.fvc, rel=1e-6)
        assert 0.35 <= clip.fev1_fvc <= 0.90
        assert 0.05 <= clip.flow_curve.time_to_pef <= 0.2


@pytest.mark.parametrize("fev1_fvc,tau_slow", [(0.85, 1.0), (0.75, 2.0), (0.55, 3.0), (0.38, 4.0)])
def test_peak_flow_within_first_fifth_second(fev1_fvc, tau_slow):
    for tau_fast in (0.25, 0.4):
        curve = from_time_constants(fvc=4.0, fev1_fvc=fev1_fvc, tau_fast=tau_fast, tau_slow=tau_slow, tau_rise=0.05)
        assert 0.05 <= curve.time_to_pef <= 0.2
        t = np.linspace(0.0, 1.0, 200_001)
        assert np.trapz(curve.flow(t), t) == pytest.approx(curve.fev1, rel=0.02)
        assert curve.fev1_fvc == pytest.approx(fev1_fvc, rel=1e-9)


def test_flow_zero_before_blow():
    curve = from_time_constants(fvc=4.0, fev1_fvc=0.8, tau_fast=0.4, tau_slow=1.5, tau_rise=0.03)
    assert curve.flow(-0.5) == 0.0
    assert curve.volume(-0.5) == 0.0
    assert curve.flow(0.0) == 0.0


def test_unreachable_pef_rejected():
    with pytest.raises(ValueError, match="pef"):
        fit_forced_expiration(fvc=4.0, fev1=3.2, pef=40.0, tau_slow=1.5, tau_rise=0.03)


def test_unreachable_ratio_rejected():
    with pytest.raises(ValueError, match="fev1_fvc"):
        from_time_constants(fvc=4.0, fev1_fvc=0.4, tau_fast=0.3, tau_slow=1.0, tau_rise=0.03)


def test_stack_clips_arrays():
    clips = generate_clips(4, seed=3, spec=SMALL)
    batch = stack_clips(clips)
    assert batch.frames.shape == (4, 30, 64, 64)
    assert batch.frames.dtype == np.float32
    assert batch.labels.shape == (4,)
    assert batch.labels.dtype == np.int64
    assert batch.labels.tolist() == [int(clip.abnormal) for clip in clips]
    assert batch.pef.tolist() == pytest.approx([clip.pef for clip in clips], rel=1e-6)


def test_stack_clips_rejects_mixed_shapes():
    clips = generate_clips(1, seed=3, spec=SMALL) + generate_clips(1, seed=3, spec=ClipSpec(size=32))
    with pytest.raises(ValueError, match="clip 1"):
        stack_clips(clips)


@pytest.mark.parametrize("n_clips", [0, -1])
def test_bad_n_clips_rejected(n_clips):
    with pytest.raises(ValueError, match="n_clips"):
        generate_clips(n_clips, seed=0)


@pytest.mark.parametrize(
    "field,value",
    [("size", 15), ("size", 0), ("n_frames", 1), ("n_frames", 0), ("fps", 0.0), ("netd_k", -0.1)],
)
def test_bad_spec_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        ClipSpec(**{field: value})


def test_bad_subject_arguments_rejected():
    with pytest.raises(ValueError, match="clips_per_subject"):
        generate_clips(2, seed=0, clips_per_subject=0)
    with pytest.raises(ValueError, match="abnormal_fraction"):
        generate_clips(2, seed=0, abnormal_fraction=1.5)
