"""``python -m cohort``: simulate a cohort, ingest it, check the store, segment and score."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cohort.cli import main


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "sim"
    assert main(["simulate", "--out", str(folder), "--subjects", "2", "--seed", "4", "--width", "96",
                 "--height", "80"]) == 0
    return folder


def test_simulate_writes_recordings_and_truth(simulated):
    names = sorted(p.name for p in simulated.iterdir())
    assert names == ["SIM0001_rgb.mp4", "SIM0001_thermal.h5", "SIM0002_rgb.mp4", "SIM0002_thermal.h5",
                     "metadata.csv", "truth.json"]
    truth = json.loads((simulated / "truth.json").read_text())
    assert sorted(truth["sessions"]) == ["SIM0001", "SIM0002"]
    for blows in truth["sessions"].values():
        assert len(blows) >= 3
        assert all(0 <= blow["start"] < blow["end"] for blow in blows)
    with h5py.File(simulated / "SIM0001_thermal.h5") as handle:
        assert handle["temperature_c"].attrs["fps"] == pytest.approx(8.7)
        assert handle["temperature_c"].shape[1:] == (80, 96)


def test_ingest_check_and_resume(simulated, tmp_path, capsys):
    store = tmp_path / "cohort.h5"
    arguments = ["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--size", "32"]
    assert main(arguments) == 0
    assert "added 2 recordings" in capsys.readouterr().out
    assert main(arguments) == 0
    assert "skipped 2 already stored" in capsys.readouterr().out
    assert main(["ingest", *arguments[1:], "--modality", "rgb"]) == 0
    assert main(["check", str(store)]) == 0
    truth = json.loads((simulated / "truth.json").read_text())
    with h5py.File(store) as handle:
        for subject_id, blows in truth["sessions"].items():
            clips = handle[f"subjects/{subject_id}/recordings/thermal/clips"]
            assert clips.shape[0] == len(blows)
            assert clips.shape[1:] == (30, 32, 32)


def test_segment_scores_against_truth(simulated, tmp_path, capsys):
    plot = tmp_path / "signal.png"
    assert main(["segment", str(simulated / "SIM0001_thermal.h5"), "--plot", str(plot),
                 "--truth", str(simulated / "truth.json")]) == 0
    output = capsys.readouterr().out
    assert "F1 1.00" in output
    assert plot.stat().st_size > 0


def test_ingest_without_metadata_row(simulated, tmp_path, capsys):
    rows = (simulated / "metadata.csv").read_text().splitlines()
    metadata = tmp_path / "metadata.csv"
    metadata.write_text("\n".join(rows[:2]) + "\n")  # header and SIM0001 only
    store = tmp_path / "cohort.h5"
    code = main(["ingest", "--metadata", str(metadata), "--recordings", str(simulated), "--store", str(store)])
    assert code == 2
    assert "SIM0002" in capsys.readouterr().err
    assert not store.exists()


def test_check_rejects_non_store(tmp_path, capsys):
    path = tmp_path / "not_a_store.h5"
    path.write_text("plain text")
    assert main(["check", str(path)]) == 1
    output = capsys.readouterr().out
    assert "not an HDF5 file" in output
    assert output.count("not_a_store.h5") == 1


def test_segment_flat_recording_finds_nothing(tmp_path, capsys):
    frames = np.full((60, 32, 32), 25.0, dtype=np.float32)
    path = tmp_path / "S1_flat.npy"
    np.save(path, frames)
    assert main(["segment", str(path), "--fps", "8.7", "--plot", str(tmp_path / "flat.png")]) == 0
    assert "0 cycles" in capsys.readouterr().out


def test_ingest_rejects_other_clip_shape(simulated, tmp_path, capsys):
    store = tmp_path / "cohort.h5"
    metadata = ["--metadata", str(simulated / "metadata.csv")]
    assert main(["ingest", *metadata, "--recordings", str(simulated), "--store", str(store), "--size", "32"]) == 0
    # Another modality may use its own clip shape.
    assert main(["ingest", *metadata, "--recordings", str(simulated), "--store", str(store), "--modality", "rgb",
                 "--size", "48"]) == 0
    capsys.readouterr()
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "SIM0001_second.h5").write_bytes((simulated / "SIM0001_thermal.h5").read_bytes())
    before = store.read_bytes()
    code = main(["ingest", *metadata, "--recordings", str(renamed), "--store", str(store), "--size", "48"])
    assert code == 2
    assert "(30, 32, 32)" in capsys.readouterr().err
    assert store.read_bytes() == before
    assert main(["check", str(store)]) == 0


def test_ingest_bad_options_fail_before_work(simulated, tmp_path, capsys):
    store = tmp_path / "cohort.h5"
    code = main(["ingest", "--metadata", str(simulated / "metadata.csv"), "--recordings", str(simulated),
                 "--store", str(store), "--frames", "0"])
    assert code == 2
    assert "--frames" in capsys.readouterr().err
    assert not store.exists()


def test_failed_ingest_leaves_no_new_store(tmp_path, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    with h5py.File(folder / "S1_flat.h5", "w") as handle:
        handle.create_dataset("temperature_c", data=np.full((60, 32, 32), 25.0, dtype=np.float32)).attrs["fps"] = 8.7
    metadata = tmp_path / "metadata.csv"
    metadata.write_text("subject_id,age,sex,height,weight,smoking,pack_years\nS1,40,F,165,60,never,\n")
    store = tmp_path / "cohort.h5"
    code = main(["ingest", "--metadata", str(metadata), "--recordings", str(folder), "--store", str(store)])
    assert code == 2
    assert "no breathing cycle" in capsys.readouterr().err
    assert not store.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_lower_case_metadata_ids_match(simulated, tmp_path):
    lowered = tmp_path / "metadata.csv"
    lowered.write_text((simulated / "metadata.csv").read_text().replace("SIM0", "sim0"))
    store = tmp_path / "cohort.h5"
    assert main(["ingest", "--metadata", str(lowered), "--recordings", str(simulated), "--store", str(store),
                 "--size", "32"]) == 0


def test_check_missing_store(tmp_path, capsys):
    assert main(["check", str(tmp_path / "absent.h5")]) == 2
    assert "not found" in capsys.readouterr().err
