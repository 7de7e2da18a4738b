"""``python -m cohort ingest`` options: --skip-failed and --cycles-from thermal."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from cohort.cli import main
from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_ingest import StoredCycles, ingest, transfer_cycles

CLIP_OPTIONS = ["--frames", "8", "--size", "16"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingest") / "sim"
    assert main(["simulate", "--out", str(folder), "--subjects", "3", "--seed", "4", "--width", "96",
                 "--height", "80"]) == 0
    return folder


@pytest.fixture(scope="module")
def thermal_store(simulated, tmp_path_factory):
    store = tmp_path_factory.mktemp("stores") / "thermal.h5"
    assert main(["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), *CLIP_OPTIONS]) == 0
    return store


def _flat_recording(folder, name: str = "S9_flat.h5") -> None:
    with h5py.File(folder / name, "w") as handle:
        handle.create_dataset("temperature_c", data=np.full((60, 32, 32), 25.0, dtype=np.float32)).attrs["fps"] = 8.7


def _metadata_with_s9(simulated, path):
    path.write_text((simulated / "metadata.csv").read_text() + "S9,40,F,165,60,never,,,,,\n")
    return path


@pytest.mark.slow
def test_rgb_clips_follow_thermal_cycles(simulated, thermal_store, tmp_path, capsys):
    store = tmp_path / "both.h5"
    shutil.copy(thermal_store, store)
    code = main(["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--modality", "rgb", "--cycles-from", "thermal", *CLIP_OPTIONS])
    assert code == 0
    assert "added 3 recordings" in capsys.readouterr().out
    truth = json.loads((simulated / "truth.json").read_text())["sessions"]
    with CohortStore.open(store) as opened:
        for subject_id in ["SIM0001", "SIM0002", "SIM0003"]:
            thermal_cycles = opened.read_cycles(subject_id, "thermal")
            rgb_cycles = opened.read_cycles(subject_id, "rgb")
            # Both cameras run at 8.7 Hz from the same t = 0, so the frames are the same.
            assert rgb_cycles == thermal_cycles
            assert len(rgb_cycles) == len(truth[subject_id])
            assert opened.read_clips(subject_id, "rgb").shape == (len(thermal_cycles), 8, 16, 16, 3)
            assert "cycles from the thermal recording 'thermal'" in opened.recording_attrs(subject_id, "rgb")["notes"][-1]
    assert main(["check", str(store)]) == 0


def test_cycles_from_needs_thermal_in_store(simulated, tmp_path, capsys):
    store = tmp_path / "empty.h5"
    arguments = ["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--modality", "rgb", "--cycles-from", "thermal", *CLIP_OPTIONS]
    assert main(arguments) == 2
    assert f"store {store} not found; ingest the thermal recordings into it first" in capsys.readouterr().err
    assert not store.exists()
    assert main(["ingest", *arguments[1:5], "--store", str(store), "--modality", "thermal", "--cycles-from",
                 "thermal"]) == 2
    assert "--cycles-from thermal applies to --modality rgb only" in capsys.readouterr().err


def test_cycles_from_subject_without_thermal(simulated, thermal_store, tmp_path, capsys):
    recordings = tmp_path / "recordings"
    shutil.copytree(simulated, recordings)
    shutil.copy(recordings / "SIM0001_rgb.mp4", recordings / "S9_rgb.mp4")
    metadata = _metadata_with_s9(simulated, tmp_path / "metadata.csv")
    store = tmp_path / "store.h5"
    shutil.copy(thermal_store, store)
    arguments = ["ingest", "--metadata", str(metadata), "--recordings", str(recordings), "--store", str(store),
                 "--modality", "rgb", "--cycles-from", "thermal", *CLIP_OPTIONS]
    assert main(arguments) == 2
    assert "subjects ['S9'] have no thermal recording in" in capsys.readouterr().err

    assert main([*arguments, "--skip-failed"]) == 0
    output = capsys.readouterr().out
    assert f"failed: {recordings / 'S9_rgb.mp4'}: subject S9 has no thermal recording" in output
    assert "added 3 recordings, skipped 0 already stored, 1 failed and left out" in output
    with CohortStore.open(store) as opened:
        assert opened.subject_ids() == ["SIM0001", "SIM0002", "SIM0003"]


def test_skip_failed_lists_unsegmentable(simulated, tmp_path, capsys):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    shutil.copy(simulated / "SIM0001_thermal.h5", recordings)
    _flat_recording(recordings)
    metadata = _metadata_with_s9(simulated, tmp_path / "metadata.csv")
    store = tmp_path / "store.h5"
    arguments = ["ingest", "--metadata", str(metadata), "--recordings", str(recordings), "--store", str(store),
                 *CLIP_OPTIONS]
    assert main(arguments) == 2
    assert "no breathing cycle found" in capsys.readouterr().err
    assert not store.exists()

    assert main([*arguments, "--skip-failed"]) == 0
    output = capsys.readouterr().out.splitlines()
    assert output[0].startswith(f"failed: {recordings / 'S9_flat.h5'}: ")
    assert "no breathing cycle found" in output[0]
    assert output[1] == f"{store}: added 1 recordings, skipped 0 already stored, 1 failed and left out"
    with CohortStore.open(store) as opened:
        assert opened.subject_ids() == ["SIM0001"]

    # A second run retries the failed recording and skips the stored one.
    assert main([*arguments, "--skip-failed"]) == 0
    assert f"{store}: added 0 recordings, skipped 1 already stored, 1 failed and left out" in capsys.readouterr().out


def test_skip_failed_all_failed_leaves_no_store(tmp_path, capsys):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    _flat_recording(recordings, "S1_flat.h5")
    metadata = tmp_path / "metadata.csv"
    metadata.write_text("subject_id,age,sex,height,weight,smoking,pack_years\nS1,40,F,165,60,never,\n")
    store = tmp_path / "store.h5"
    assert main(["ingest", "--metadata", str(metadata), "--recordings", str(recordings), "--store", str(store),
                 "--skip-failed"]) == 0
    assert "added 0 recordings, skipped 0 already stored, 1 failed and left out" in capsys.readouterr().out
    assert not store.exists()


def test_ingest_api_reports_failures(tmp_path):
    def load_good():
        return Recording(np.full((20, 6, 6), 30.0, dtype=np.float32), 8.7, "thermal", "A")

    def load_bad():
        raise OSError("disk read failed")

    def process(recording):
        return [Cycle(0, 10)], np.full((1, 3, 4, 4), 30.0, dtype=np.float32)

    subjects = {name: {"age": 50, "sex": "F", "height_cm": 160, "fev1_fvc": 0.8, "pef": 5.0} for name in "AB"}
    report = ingest(tmp_path / "store.h5", [("A", "rec", load_good), ("B", "rec", load_bad)], process=process,
                    subjects=subjects, progress=False, skip_failed=True)
    assert report.added == (("A", "rec"),)
    assert [(f.subject_id, f.name, f.reason) for f in report.failed] == [("B", "rec", "disk read failed")]
    with pytest.raises(OSError, match="disk read failed"):
        ingest(tmp_path / "other.h5", [("B", "rec", load_bad)], process=process, subjects=subjects, progress=False)


def test_transfer_cycles_between_frame_rates():
    source = StoredCycles("thermal", 8.7, (Cycle(87, 100, 0.9), Cycle(200, 201, 0.5)))
    video = Recording(np.zeros((900, 4, 4, 3), dtype=np.uint8), 30.0, "rgb", "A")
    # 87 / 8.7 s = 10 s -> frame 300; 100 / 8.7 s = 11.49 s -> frame 345 (rounded).
    assert transfer_cycles(source, video) == [Cycle(300, 345, 0.9), Cycle(690, 693, 0.5)]
    short = Recording(np.zeros((600, 4, 4, 3), dtype=np.uint8), 30.0, "rgb", "A")
    with pytest.raises(ValueError, match=r"cycle 1 of the thermal recording starts at 22.99 s, after the end of "
                                         r"this recording \(20.00 s\)"):
        transfer_cycles(source, short)


def test_window_cuts_fixed_duration_clips(simulated, thermal_store, tmp_path):
    from cohort.readers import read_recording
    from cohort.segmentation import cut_clips

    store = tmp_path / "window.h5"
    code = main(["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--window", "4.0", *CLIP_OPTIONS])
    assert code == 0
    recording = read_recording(simulated / "SIM0001_thermal.h5")
    with CohortStore.open(store) as windowed, CohortStore.open(thermal_store) as plain:
        cycles = windowed.read_cycles("SIM0001", "thermal")
        assert cycles == plain.read_cycles("SIM0001", "thermal")
        expected = cut_clips(recording, list(cycles), n_frames=8, size=16, window_s=4.0)
        np.testing.assert_array_equal(windowed.read_clips("SIM0001", "thermal"), expected)
        assert not np.array_equal(windowed.read_clips("SIM0001", "thermal"), plain.read_clips("SIM0001", "thermal"))


@pytest.mark.parametrize("window", ["0", "-1", "nan"])
def test_window_must_be_positive(simulated, tmp_path, capsys, window):
    store = tmp_path / "bad.h5"
    code = main(["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--window", window, *CLIP_OPTIONS])
    assert code == 2
    assert "--window must be a positive number of seconds" in capsys.readouterr().err
    assert not store.exists()
