"""Cohort HDF5 store: round trip, atomic and resumable ingestion, checks, hostile files, dataset."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cohort.dataset import FEATURE_NAMES, ClipDataset
from cohort.recording import Cycle, Recording
from cohort.store import CohortStore
from cohort.store_check import check_store
from cohort.store_format import FORMAT_VERSION, StoreError, SubjectInfo
from cohort.store_ingest import IngestItem, Processed, ingest

SUBJECTS = {
    "s01": {"age": 64, "sex": "M", "height_cm": 172, "smoking": "former", "pack_years": 30, "fev1_fvc": 0.55, "pef": 4.2},
    "S02": {"age": 35, "sex": "F", "height_cm": 165, "weight_kg": 60, "smoking": "never", "fev1_fvc": 0.82, "pef": 6.5},
    "s03": {"age": 50, "sex": "F", "height_cm": 158, "fev1_fvc": 0.74, "pef": 5.0, "label": 1},
}


def _thermal(subject_id: str, seed: int, frames: int = 24) -> Recording:
    rng = np.random.default_rng(seed)
    return Recording(rng.normal(30.0, 1.0, (frames, 12, 10)).astype(np.float32), 8.7, "thermal", subject_id,
                     Path(f"/data/{subject_id}.tiff"), ["8-bit colour map assumed"])


def _process(recording: Recording) -> Processed:
    """Two cycles, one 5-frame 6x6 clip per cycle, with per-clip PEF targets."""
    rng = np.random.default_rng(recording.n_frames)
    clips = rng.normal(31.0, 0.5, (2, 5, 6, 6)).astype(np.float32)
    return Processed([Cycle(0, 8, 0.9), Cycle(10, 20, 0.6)], clips, clip_targets={"pef": [4.0, 4.4]})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _leftovers(folder: Path, store: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry != store)


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "cohort.h5"
    items = [(subject_id, f"rec{n}", lambda s=subject_id, n=n: _thermal(s.upper(), 20 + n))
             for subject_id in SUBJECTS for n in range(2)]
    ingest(path, items, process=_process, subjects=SUBJECTS, progress=False)
    return path


def test_round_trip_values(store_path):
    assert check_store(store_path) == []
    with CohortStore.open(store_path) as store:
        assert store.subject_ids() == ["S01", "S02", "S03"]
        assert store.recording_names(" s02 ") == ["rec0", "rec1"]
        info = store.read_subject("S01")
        assert (info.age, info.sex, info.smoking, info.pack_years, info.label) == (64.0, "M", "former", 30.0, -1)
        assert np.isnan(info.weight_kg)
        recording = store.read_recording("s01", "rec1")
        np.testing.assert_array_equal(recording.frames, _thermal("S01", 21).frames)
        assert (recording.fps, recording.modality, recording.subject_id) == (8.7, "thermal", "S01")
        assert recording.source == Path("/data/S01.tiff")
        assert recording.notes == ["8-bit colour map assumed"]
        assert store.read_cycles("S01", "rec1") == [Cycle(0, 8, 0.9), Cycle(10, 20, 0.6)]
        np.testing.assert_array_equal(store.read_clips("S01", "rec1"), _process(recording).clips)
        table = store.read_clip_table("S01", "rec1")
        np.testing.assert_allclose(table["clip_pef"], [4.0, 4.4], rtol=1e-6)
        np.testing.assert_allclose(table["clip_fev1_fvc"], [0.55, 0.55], rtol=1e-6)
        assert table["clip_label"].tolist() == [1, 1]  # label unknown, so FEV1/FVC < 0.70 decides
        assert store.read_clip_table("S03", "rec0")["clip_label"].tolist() == [1, 1]  # stored label wins
        assert store.read_clip_table("S02", "rec0")["clip_label"].tolist() == [0, 0]
    with h5py.File(store_path, "r") as handle:
        assert handle.attrs["format_version"] == FORMAT_VERSION
        clips = handle["subjects/S01/recordings/rec0/clips"]
        assert clips.chunks == (1, 5, 6, 6)
        assert (clips.compression, clips.shuffle) == ("gzip", True)


def test_rgb_recording_round_trip(tmp_path):
    path = tmp_path / "rgb.h5"
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    clips = rng.integers(0, 256, (1, 4, 6, 6, 3), dtype=np.uint8)
    with CohortStore.create(path) as store:
        store.add_subject("S9", SUBJECTS["s01"])
        store.add_recording("S9", "cam", Recording(frames, 30.0, "rgb", "s9"), [Cycle(2, 6)], clips)
    assert check_store(path) == []
    dataset = ClipDataset(path, modality="rgb")
    clip, _, label, _ = dataset[0]
    assert clip.shape == (3, 4, 6, 6)
    assert torch.allclose(clip[:, 1, 2, 3], torch.tensor(clips[0, 1, 2, 3] / 255.0, dtype=torch.float32))
    assert int(label) == 1
    with pytest.raises(ValueError, match="no thermal clips"):
        ClipDataset(path)


def test_failed_edit_keeps_store(store_path):
    before = _digest(store_path)
    with pytest.raises(RuntimeError, match="stop"):
        with CohortStore.open(store_path, "a") as store:
            store.add_subject("S04", SUBJECTS["s01"])
            processed = _process(_thermal("S04", 1))
            store.add_recording("S04", "rec0", _thermal("S04", 1), processed.cycles, processed.clips)
            raise RuntimeError("stop")
    assert _digest(store_path) == before
    assert _leftovers(store_path.parent, store_path) == []


def test_dropped_writer_discards(store_path):
    before = _digest(store_path)
    store = CohortStore.open(store_path, "a")
    store.add_subject("S04", SUBJECTS["s01"])
    del store
    assert _digest(store_path) == before
    assert _leftovers(store_path.parent, store_path) == []


def test_failed_ingest_keeps_store(store_path):
    before = _digest(store_path)

    def broken(recording):
        if recording.subject_id == "S05":
            raise OSError("camera file unreadable")
        return _process(recording)

    items = [(subject_id, "late", lambda s=subject_id: _thermal(s, 3)) for subject_id in ("S04", "S05", "S06")]
    metadata = dict.fromkeys(("S04", "S05", "S06"), SUBJECTS["S02"])
    with pytest.raises(OSError, match="unreadable"):
        ingest(store_path, items, process=broken, subjects=metadata, commit_every=10, progress=False)
    assert _digest(store_path) == before
    assert _leftovers(store_path.parent, store_path) == []
    with CohortStore.open(store_path) as store:
        assert store.subject_ids() == ["S01", "S02", "S03"]


def test_ingest_resumes_after_failure(tmp_path):
    path = tmp_path / "resume.h5"
    loads: list[str] = []
    fail_on = {"R3"}

    def loader(name):
        def load():
            loads.append(name)
            if name in fail_on:
                raise KeyboardInterrupt
            return _thermal("S02", 40)
        return load

    items = [IngestItem("s02", f"R{n}", loader(f"R{n}")) for n in range(6)]
    with pytest.raises(KeyboardInterrupt):
        ingest(path, items, process=_process, subjects=SUBJECTS, commit_every=1, progress=False)
    assert loads == ["R0", "R1", "R2", "R3"]
    with CohortStore.open(path) as store:
        assert store.recording_names("S02") == ["R0", "R1", "R2"]

    fail_on.clear()
    loads.clear()
    report = ingest(path, items, process=_process, commit_every=1, progress=False)
    assert loads == ["R3", "R4", "R5"]
    assert report.skipped == (("S02", "R0"), ("S02", "R1"), ("S02", "R2"))
    assert report.added == (("S02", "R3"), ("S02", "R4"), ("S02", "R5"))
    assert check_store(path) == []
    assert _leftovers(tmp_path, path) == []


def test_ingest_rejects_unknown_subject(tmp_path):
    loads = []
    items = [("S01", "a", lambda: loads.append(1)), ("S77", "a", lambda: loads.append(1))]
    with pytest.raises(ValueError, match=r"subjects \['S77'\] are neither"):
        ingest(tmp_path / "c.h5", items, process=_process, subjects={"S01": SUBJECTS["s01"]}, progress=False)
    assert loads == []
    with pytest.raises(ValueError, match="listed twice"):
        ingest(tmp_path / "c.h5", [items[0], ("s01 ", "a", items[0][2])], process=_process, progress=False)


def test_ingest_rejects_metadata_conflict(store_path):
    loads = []
    items = [("S01", "extra", lambda: loads.append(1))]
    with pytest.raises(ValueError, match="differs from the metadata passed"):
        ingest(store_path, items, process=_process, subjects={"s01": SUBJECTS["S02"]}, progress=False)
    with pytest.raises(ValueError, match="SubjectInfo.age"):
        ingest(store_path, items, process=_process, subjects={"S08": {"age": -3, "sex": "F", "height_cm": 150}})
    assert loads == []


def test_invalid_recording_writes_nothing(store_path):
    bad_clips = np.full((2, 5, 6, 6), np.nan, dtype=np.float32)
    recording = _thermal("S01", 9)
    cases = [
        (dict(clips=bad_clips), "NaN"),
        (dict(clips=np.zeros((1, 5, 6, 6), np.float32)), "1 clips for 2 cycles"),
        (dict(cycles=[Cycle(0, 30), Cycle(1, 2)]), "invalid for a recording of 24 frames"),
        (dict(clip_targets={"pef": 90.0}), "'pef'"),
        (dict(clip_targets={"fvc": 3.0}), "unknown clip targets"),
        (dict(clip_label=[0, 2]), "clip_label"),
        (dict(clip_cycle=[1, 1]), "uses a cycle twice"),
    ]
    with CohortStore.open(store_path, "a") as store:
        for override, message in cases:
            arguments = {"cycles": [Cycle(0, 8), Cycle(8, 16)], "clips": np.zeros((2, 5, 6, 6), np.float32)}
            arguments.update(override)
            with pytest.raises(ValueError, match=message):
                store.add_recording("S01", "new", recording, **arguments)
            assert "new" not in store.recording_names("S01")
        with pytest.raises(ValueError, match="belongs to subject"):
            store.add_recording("S02", "new", recording, [], np.zeros((0, 5, 6, 6), np.float32))
        with pytest.raises(ValueError, match="already in"):
            store.add_recording("S01", "rec0", recording, [], np.zeros((0, 5, 6, 6), np.float32))
        with pytest.raises(ValueError, match="other metadata"):
            store.add_subject("S01", SUBJECTS["S02"])
    assert check_store(store_path) == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"age": 200, "sex": "M", "height_cm": 170}, r"SubjectInfo.age = 200 is invalid"),
        ({"age": 40, "sex": "X", "height_cm": 170}, "SubjectInfo.sex"),
        ({"age": 40, "sex": "M", "height_cm": 170, "smoking": "yes"}, "SubjectInfo.smoking"),
        ({"age": 40, "sex": "M", "height_cm": 170, "label": 2}, "SubjectInfo.label"),
        ({"age": 40, "sex": "M", "height_cm": 170, "fev1_fvc": 1.4}, r"fev1_fvc = 1.4 is invalid"),
        ({"age": 40, "sex": "M", "heigth_cm": 170}, "unknown subject metadata fields"),
    ],
)
def test_subject_info_validation(values, message):
    with pytest.raises(ValueError, match=message):
        SubjectInfo.from_values(values)


def test_subject_info_from_object():
    class Row:
        subject_id, age, sex, height, weight, smoking = "S1", 61.0, "F", 160.0, 70.0, "current"
        pack_years, fev1, fvc, fev1_fvc, pef, ethnicity = 20.0, None, None, 0.6, None, "other"

    info = SubjectInfo.from_values(Row())
    assert (info.height_cm, info.weight_kg, info.smoking, info.fev1_fvc) == (160.0, 70.0, "current", 0.6)
    assert np.isnan(info.pef)
    assert info.label == -1


def test_writer_lock(store_path):
    with CohortStore.open(store_path, "a"):
        with pytest.raises(StoreError, match="being written by another process"):
            CohortStore.open(store_path, "a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store_path.parent / f".{store_path.name}.lock").write_text(dead.stdout.strip())
    with CohortStore.open(store_path, "a") as store:
        assert store.writable
    assert _leftovers(store_path.parent, store_path) == []


def test_bad_files_raise_store_error(tmp_path, store_path):
    text = tmp_path / "notes.h5"
    text.write_text("subject,age\n")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(store_path.read_bytes()[: store_path.stat().st_size // 2])
    newer = tmp_path / "newer.h5"
    newer.write_bytes(store_path.read_bytes())
    with h5py.File(newer, "r+") as handle:
        handle.attrs["format_version"] = FORMAT_VERSION + 1

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.arange(3)
    hollow = tmp_path / "hollow.h5"
    hollow.write_bytes(store_path.read_bytes())
    with h5py.File(hollow, "r+") as handle:
        del handle["subjects"]

    cases = [(text, "not an HDF5 file"), (truncated, "truncated or damaged"), (newer, "upgrade PulmoFusion"),
             (foreign, "it has no 'format' attribute"), (hollow, "lacks 'subjects'")]
    for path, message in cases:
        with pytest.raises(StoreError, match=message) as caught:
            CohortStore.open(path)
        assert str(path) in str(caught.value)
        problems = check_store(path)
        assert len(problems) == 1
        assert message in problems[0]

    with pytest.raises(FileNotFoundError, match="build one with python -m cohort ingest"):
        CohortStore.open(tmp_path / "absent.h5")
    with pytest.raises(StoreError, match="already exists"):
        CohortStore.create(store_path)
    with pytest.raises(ValueError, match="mode = 'w' is invalid"):
        CohortStore.open(store_path, "w")


def test_hostile_files_rejected(tmp_path, store_path):
    group = "subjects/S01/recordings/rec0"
    with h5py.File(store_path, "r+") as handle:
        del handle[f"{group}/clips"]
        # Declares 4.6 TB without storing it; reading it must fail before allocation.
        handle[group].create_dataset("clips", shape=(10**6, 30, 224, 224), dtype="f4", chunks=(1, 30, 224, 224))
        del handle[f"{group.replace('rec0', 'rec1')}/frames"]
        handle[group.replace("rec0", "rec1")]["frames"] = h5py.ExternalLink("/etc/hostname", "/")
        handle["subjects/S02/metadata"].attrs["sex"] = "F" * 100  # variable-length string
        handle["subjects/S03"].attrs["unused"] = 1
        handle["subjects"]["S09"] = h5py.SoftLink("/subjects/S03")
    with CohortStore.open(store_path) as store:
        with pytest.raises(StoreError, match="GiB limit"):
            store.read_clips("S01", "rec0", 0)
        with pytest.raises(StoreError, match="ExternalLink"):
            store.read_recording("S01", "rec1")
        with pytest.raises(StoreError, match="variable-length string"):
            store.read_subject("S02")
        with pytest.raises(StoreError, match="SoftLink"):
            store.read_subject("S09")
    problems = check_store(store_path)
    assert len(problems) == 4
    assert any("GiB limit" in problem for problem in problems)
    assert any("ExternalLink" in problem for problem in problems)


def test_external_and_virtual_rejected(tmp_path, store_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(bytes(2 * 5 * 6 * 6 * 4))
    with h5py.File(store_path, "r+") as handle:
        recording = handle["subjects/S02/recordings/rec0"]
        del recording["clips"]
        recording.create_dataset("clips", shape=(2, 5, 6, 6), dtype="f4", external=[(str(outside), 0, h5py.h5f.UNLIMITED)])
    with h5py.File(store_path, "r+") as handle:
        recording = handle["subjects/S03/recordings/rec0"]
        del recording["clips"]
        layout = h5py.VirtualLayout(shape=(2, 5, 6, 6), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "elsewhere.h5"), "clips", shape=(2, 5, 6, 6))
        recording.create_virtual_dataset("clips", layout)
    with CohortStore.open(store_path) as store:
        with pytest.raises(StoreError, match="external files"):
            store.read_clips("S02", "rec0")
        with pytest.raises(StoreError, match="virtual dataset"):
            store.read_clips("S03", "rec0")
    assert check_store(store_path) == [
        f"/subjects/S02/recordings/rec0/clips in {store_path} stores its data in external files; "
        "cohort stores keep all data inside the file",
        f"/subjects/S03/recordings/rec0/clips in {store_path} is a virtual dataset; "
        "cohort stores keep all data inside the file",
    ]


def test_check_store_finds_damage(store_path):
    with h5py.File(store_path, "r+") as handle:
        recording = handle["subjects/S01/recordings/rec0"]
        recording["clips"][1, 2, 3, 4] = np.nan
        recording["clip_label"][0] = 3
        del recording["clip_pef"]
        recording["clip_pef"] = np.float32([4.0, 4.0, 4.0])
        handle["subjects/S02/recordings/rec1"].attrs["complete"] = np.int8(0)
        handle["subjects"].copy("S03", "s03 ")
    problems = check_store(store_path)
    where = f"/subjects/S01/recordings/rec0 in {store_path}"
    assert f"{where}: clips contain NaN or infinite values" in problems
    assert f"{where}: clip_pef has 3 entries for 2 clips" in problems
    assert f"/subjects/S02/recordings/rec1 in {store_path} is incomplete; ingest it again" in problems
    assert f"subject group 's03 ' in {store_path} is not normalised; expected 'S03'" in problems
    assert f"subject groups 'S03' and 's03 ' in {store_path} are the same subject 'S03'" in problems
    assert len(problems) == 5


def test_clip_dataset_items(store_path):
    dataset = ClipDataset(store_path, subjects=[" s01", "S03"])
    assert len(dataset) == 8
    assert dataset.subject_ids == ["S01", "S03"]
    clip, features, label, targets = dataset[1]
    assert clip.dtype == torch.float32
    assert clip.shape == (1, 5, 6, 6)
    assert features.shape == (len(FEATURE_NAMES),)
    assert features.tolist() == pytest.approx([0.64, 1.0, 0.86, 0.0, 1.0, 0.6, 0.0, 1.0, 0.0])
    assert int(label) == 1
    assert float(targets["pef"]) == pytest.approx(4.4)
    assert float(targets["fev1_fvc"]) == pytest.approx(0.55)
    # S03 has FEV1/FVC 0.74 but a stored label of 1 (for example from the lower limit of normal).
    assert [int(item[2]) for item in ClipDataset(store_path, subjects=["S03"])] == [0, 0, 0, 0]
    assert [int(item[2]) for item in ClipDataset(store_path, subjects=["S03"], label="stored")] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match=r"\['S99'\] are not in"):
        ClipDataset(store_path, subjects=["S99"])
    with pytest.raises(ValueError, match="label = 'gold' is invalid"):
        ClipDataset(store_path, label="gold")


def test_clip_dataset_workers(store_path):
    dataset = ClipDataset(store_path)
    dataset[0]  # opens the file in this process before the workers fork
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    batches = list(loader)
    clips = torch.cat([batch[0] for batch in batches])
    assert clips.shape == (12, 1, 5, 6, 6)
    expected = torch.stack([dataset[index][0] for index in range(len(dataset))])
    assert torch.equal(clips, expected)
    assert torch.cat([batch[3]["pef"] for batch in batches]).tolist() == pytest.approx([4.0, 4.4] * 6)
    dataset.close()


def test_ingest_accepts_same_subject_with_missing_values(tmp_path):
    # A subject whose unrecorded fields are NaN must compare equal to itself on a second ingest.
    from cohort.store_format import SubjectInfo
    from cohort.store_ingest import _same_subject

    info = SubjectInfo(age=50.0, sex="F", height_cm=160.0, weight_kg=60.0, smoking="never")
    assert _same_subject(info, SubjectInfo.from_values(info))
    assert not _same_subject(info, SubjectInfo(age=51.0, sex="F", height_cm=160.0, weight_kg=60.0, smoking="never"))


def test_stale_working_copy_removed_with_stale_lock(tmp_path):
    from cohort.store import CohortStore

    path = tmp_path / "cohort.h5"
    CohortStore.create(path).commit()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".cohort.h5.lock").write_text(dead.stdout.strip())
    leftover = tmp_path / ".cohort.h5.abc123.tmp"
    leftover.write_bytes(b"half-written copy")
    with CohortStore.open(path, "a"):
        pass
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.h5"]
