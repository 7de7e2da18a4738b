"""Tests of the physiological cohort simulator (cohort.simulator and its sim_* modules)."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
from pyspiro import BOWERMAN_2022, HANKINSON_1999

from cohort.metadata import read_metadata
from cohort.sim_cache import cache_key
from cohort.simulator import (
    METADATA_COLUMNS,
    SimulationParameters,
    default_cohort,
    simulate_cohort,
    write_metadata_csv,
)
from cohort.thermal import FaceLayout

SMALL = dict(size=(64, 48), blows_per_session=(2, 3), rest_s=(2.0, 3.0))


@pytest.fixture(scope="module")
def small_cohort():
    return simulate_cohort(2, seed=3, **SMALL)


@pytest.fixture(scope="module")
def small_session(small_cohort):
    return small_cohort.sessions[0]


def _mask_box(width: int, height: int) -> tuple[slice, slice]:
    """Central half of the mask ellipse of the default layout, in (rows, columns)."""
    layout = FaceLayout()
    cx, cy = layout.mask_center[0] * width, layout.mask_center[1] * height
    ax, ay = 0.5 * layout.mask_semi_axes[0] * width, 0.5 * layout.mask_semi_axes[1] * height
    return slice(int(cy - ay), int(cy + ay) + 1), slice(int(cx - ax), int(cx + ax) + 1)


def test_simulation_is_deterministic(small_session):
    again = simulate_cohort(2, seed=3, **SMALL)
    other = simulate_cohort(2, seed=4, **SMALL)
    repeat = again.sessions[0]
    assert again.subjects == simulate_cohort(2, seed=3, **SMALL).subjects
    assert np.array_equal(repeat.thermal.frames, small_session.thermal.frames)
    assert np.array_equal(repeat.rgb.frames, small_session.rgb.frames)
    assert repeat.cycles == small_session.cycles
    assert other.subjects[0].fev1 != again.subjects[0].fev1


def test_subject_does_not_depend_on_cohort_size():
    three = simulate_cohort(3, seed=5, **SMALL)
    one = simulate_cohort(1, seed=5, **SMALL)
    assert three.subjects[0] == one.subjects[0]


def test_recording_shapes_and_types(small_session):
    thermal, rgb = small_session.thermal, small_session.rgb
    assert thermal.frames.dtype == np.float32
    assert thermal.frames.shape[1:] == (48, 64)
    assert rgb.frames.dtype == np.uint8
    assert rgb.frames.shape == thermal.frames.shape + (3,)
    assert thermal.fps == pytest.approx(8.7)
    assert thermal.subject_id == small_session.subject.subject_id
    assert 2 <= len(small_session.cycles) <= 3
    assert len(small_session.cycles) == len(small_session.spirometry)


def test_default_cohort_has_normal_and_obstructed():
    cohort = simulate_cohort(12, seed=0)
    ratios = [subject.fev1_fvc for subject in cohort.subjects]
    assert any(ratio < 0.70 for ratio in ratios)
    assert any(ratio >= 0.70 for ratio in ratios)
    assert any(subject.obstructed for subject in cohort.subjects)
    assert not all(subject.obstructed for subject in cohort.subjects)
    assert cohort.fixed_ratio_obstructed_fraction == pytest.approx(2 / 12)


def test_population_prevalence_is_plausible():
    cohort = simulate_cohort(150, seed=11, modalities=("thermal",))
    fraction = cohort.fixed_ratio_obstructed_fraction
    assert 0.10 <= fraction <= 0.40
    ages = np.array([subject.age for subject in cohort.subjects])
    assert ages.min() >= 20.0
    assert ages.max() <= 80.0
    never = [subject for subject in cohort.subjects if subject.smoking == "never"]
    assert all(subject.pack_years == 0.0 for subject in never)


def test_blow_truth_matches_flow_curve(small_session):
    timeline = small_session.timeline
    for blow in small_session.spirometry:
        step = 1e-4
        first_second = np.arange(blow.onset_s, blow.onset_s + 1.0 + step / 2, step)
        whole_blow = np.arange(blow.onset_s, blow.onset_s + blow.fet_s + step / 2, step)
        fev1 = np.trapz(timeline.flow(first_second), first_second)
        fvc = np.trapz(timeline.flow(whole_blow[:-1]), whole_blow[:-1])
        assert fev1 == pytest.approx(blow.fev1, rel=0.02)
        assert fvc == pytest.approx(blow.fvc, rel=0.02)
        assert timeline.flow(whole_blow).max() == pytest.approx(blow.pef, rel=0.02)
        assert blow.fev1_fvc == pytest.approx(blow.fev1 / blow.fvc)
        assert 6.0 <= blow.fet_s <= 15.0


def test_subject_reports_best_blow(small_cohort, small_session):
    subject = small_cohort.subjects[0]
    assert subject.fev1 == max(blow.fev1 for blow in small_session.spirometry)
    assert subject.fvc == max(blow.fvc for blow in small_session.spirometry)
    assert subject.pef == max(blow.pef for blow in small_session.spirometry)
    assert subject.fev1_fvc == pytest.approx(subject.fev1 / subject.fvc)


def test_cycle_boundaries_follow_definition(small_session):
    fps = small_session.thermal.fps
    fraction = 0.05
    for cycle, blow in zip(small_session.cycles, small_session.spirometry):
        assert cycle.start / fps >= blow.onset_s
        assert (cycle.start - 1) / fps < blow.onset_s
        stop = blow.onset_s + blow.stop_s
        assert cycle.end / fps >= stop - 1e-9
        assert (cycle.end - 1) / fps < stop
        assert blow.curve.flow(blow.stop_s + 0.002) < fraction * blow.pef
        assert blow.curve.flow(blow.stop_s - 0.01) >= fraction * blow.pef


def test_mask_warms_during_cycles(small_session):
    frames = small_session.thermal.frames
    rows, columns = _mask_box(64, 48)
    mask_c = frames[:, rows, columns].mean(axis=(1, 2))
    one_second = math.ceil(small_session.thermal.fps)
    for cycle in small_session.cycles:
        during = mask_c[cycle.start:cycle.end].mean()
        before = mask_c[cycle.start - one_second:cycle.start].mean()
        assert during > before + 0.5


def test_rgb_moves_more_during_blows(small_cohort):
    rows, columns = _mask_box(64, 48)
    for session in small_cohort.sessions:
        frames = session.rgb.frames.astype(np.float64)
        region_mean = frames[:, rows, columns].mean(axis=(1, 2, 3))
        change = np.abs(np.diff(region_mean))
        times = np.arange(frames.shape[0]) / session.rgb.fps
        in_cycle = np.zeros(frames.shape[0], dtype=bool)
        for cycle in session.cycles:
            in_cycle[cycle.start:cycle.end] = True
        rest = session.timeline.rest_mask(times)
        # change[k] is between frames k and k + 1; count it where both frames are in the phase.
        blow_change = change[in_cycle[:-1] & in_cycle[1:]].mean()
        rest_change = change[rest[:-1] & rest[1:]].mean()
        assert blow_change > 1.5 * rest_change


def test_reference_values_match_pyspiro():
    cohort = simulate_cohort(4, seed=2, **SMALL)
    gli = BOWERMAN_2022()
    hankinson = HANKINSON_1999()
    for subject in cohort.subjects:
        sex = 1 if subject.sex == "M" else 0
        reference = subject.reference
        args = (sex, subject.age, subject.height_cm)
        assert reference.fev1_pred == gli.lms(*args, 1, None)[1]
        assert reference.fvc_pred == gli.lms(*args, 2, None)[1]
        assert reference.fev1_fvc_pred == gli.lms(*args, 3, None)[1]
        assert reference.fev1_lln == gli.lln(*args, 1, None)
        assert reference.fvc_lln == gli.lln(*args, 2, None)
        assert reference.fev1_fvc_lln == gli.lln(*args, 3, None)
        assert reference.pef_pred == hankinson.lms(*args, 1, 5, None)[1]
        assert reference.pef_lln == hankinson.lln(*args, 1, 5, None)


def test_metadata_csv_round_trip(tmp_path, small_cohort):
    path = write_metadata_csv(small_cohort, tmp_path / "meta" / "subjects.csv")
    with path.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0].keys()) == METADATA_COLUMNS
    assert [row["subject_id"] for row in rows] == [s.subject_id for s in small_cohort.subjects]
    parsed = read_metadata(path)
    assert [entry.fev1 for entry in parsed] == pytest.approx([s.fev1 for s in small_cohort.subjects], abs=1e-3)
    assert list(path.parent.iterdir()) == [path]


def test_cache_round_trip_equals_fresh(tmp_path):
    parameters = SimulationParameters(n_subjects=2, seed=3, **SMALL)
    first = default_cohort(tmp_path, parameters=parameters)
    second = default_cohort(tmp_path, parameters=parameters)
    fresh = simulate_cohort(2, seed=3, **SMALL)
    folder = tmp_path / f"cohort-v1-{cache_key(parameters)}"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    assert len(list(folder.glob("*.npy"))) == 6
    for index in range(2):
        cached = second.sessions[index]
        expected = fresh.sessions[index]
        assert np.array_equal(cached.thermal.frames, expected.thermal.frames)
        assert np.array_equal(cached.rgb.frames, expected.rgb.frames)
        assert np.array_equal(cached.mask_rise_k, expected.mask_rise_k)
        assert cached.cycles == expected.cycles
        assert cached.spirometry == expected.spirometry
    assert first.subjects == fresh.subjects


def test_corrupt_cache_is_regenerated(tmp_path, caplog):
    parameters = SimulationParameters(n_subjects=1, seed=3, **SMALL)
    default_cohort(tmp_path, parameters=parameters)
    thermal_path = next(tmp_path.glob("cohort-*/session-0000.thermal.npy"))
    data = bytearray(thermal_path.read_bytes())
    data[-100:] = bytes(100)
    thermal_path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="cohort.sim_cache"):
        cohort = default_cohort(tmp_path, parameters=parameters)
    assert any("corrupt" in record.getMessage() for record in caplog.records)
    fresh = simulate_cohort(1, seed=3, **SMALL).sessions[0]
    assert np.array_equal(cohort.sessions[0].thermal.frames, fresh.thermal.frames)
    assert np.array_equal(np.load(thermal_path, allow_pickle=False), fresh.thermal.frames)


def test_truncated_cache_file_is_regenerated(tmp_path, caplog):
    parameters = SimulationParameters(n_subjects=1, seed=3, **SMALL)
    default_cohort(tmp_path, parameters=parameters)
    rgb_path = next(tmp_path.glob("cohort-*/session-0000.rgb.npy"))
    rgb_path.write_bytes(rgb_path.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="cohort.sim_cache"):
        cohort = default_cohort(tmp_path, parameters=parameters)
    assert any("corrupt" in record.getMessage() for record in caplog.records)
    assert cohort.sessions[0].rgb.frames.shape[1:] == (48, 64, 3)


def test_cache_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PULMOFUSION_CACHE", str(tmp_path / "env-cache"))
    parameters = SimulationParameters(n_subjects=1, seed=1, modalities=("thermal",), **SMALL)
    cohort = default_cohort(parameters=parameters)
    assert cohort.sessions[0].rgb is None
    assert len(list((tmp_path / "env-cache").glob("cohort-*/session-0000.thermal.npy"))) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_subjects", 0),
        ("seed", -1),
        ("fps", 0.0),
        ("size", (16, 48)),
        ("blows_per_session", (4, 3)),
        ("modalities", ("depth",)),
        ("rest_s", (0.5, 2.0)),
        ("cycle_end_fraction", 0.9),
        ("netd_k", -0.1),
    ],
)
def test_invalid_parameter_is_rejected(field, value):
    with pytest.raises(ValueError, match=f"SimulationParameters.{field} ="):
        SimulationParameters(**{field: value})
