"""Reading videos, radiometric frame folders and arrays into Recording objects."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest

from cohort.readers import CONVERSIONS, CountsToCelsius, RecordingError, palette_rgb, read_recording


def write_video(path, frames_rgb, fps, fourcc):
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def colour_frames(n=12, height=48, width=64):
    """Flat-coloured frames: red channel high, blue channel low, so BGR/RGB swaps show."""
    frames = np.zeros((n, height, width, 3), dtype=np.uint8)
    frames[..., 0] = 200
    frames[..., 1] = 100
    frames[..., 2] = 30
    return frames


def write_frames(folder, counts, pattern="frame_{}.png"):
    folder.mkdir(exist_ok=True)
    for index, frame in enumerate(counts):
        assert cv2.imwrite(str(folder / pattern.format(index)), frame)
    return folder


def centikelvin(celsius):
    return np.round((np.asarray(celsius) + 273.15) * 100).astype(np.uint16)


@pytest.mark.parametrize(("suffix", "fourcc", "fps"), [(".avi", "MJPG", 25.0), (".mp4", "mp4v", 30.0)])
def test_read_video_rgb(tmp_path, suffix, fourcc, fps):
    path = write_video(tmp_path / f"s07{suffix}", colour_frames(), fps, fourcc)
    recording = read_recording(path)
    assert recording.modality == "rgb"
    assert recording.subject_id == "s07"
    assert recording.n_frames == 12
    assert recording.frames.shape == (12, 48, 64, 3)
    assert recording.fps == pytest.approx(fps)
    mean = recording.frames.reshape(-1, 3).mean(axis=0)
    assert mean[0] == pytest.approx(200, abs=6)
    assert mean[2] == pytest.approx(30, abs=6)


def test_read_video_fps_override_noted(tmp_path):
    path = write_video(tmp_path / "a.avi", colour_frames(), 25.0, "MJPG")
    recording = read_recording(path, fps=9.0, subject_id="p1")
    assert recording.fps == 9.0
    assert recording.subject_id == "p1"
    assert any("overrides the container's 25" in note for note in recording.notes)


def test_read_video_one_frame(tmp_path):
    path = write_video(tmp_path / "one.avi", colour_frames(n=1), 25.0, "MJPG")
    with pytest.raises(RecordingError, match=r"one\.avi: the video has one frame, and one frame cannot contain a blow"):
        read_recording(path)


def test_read_video_empty_and_corrupt(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match=r"empty\.mp4: OpenCV cannot open the video"):
        read_recording(empty)
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(RecordingError, match=r"junk\.avi"):
        read_recording(junk)


def test_read_video_truncated(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (20, 48, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "cut.avi", frames, 25.0, "MJPG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match=r"cut\.avi: only 9 of the 20 frames .* pass allow_truncated=True"):
        read_recording(path)
    recording = read_recording(path, allow_truncated=True)
    assert recording.n_frames == 9
    assert "only 9 of the 20 frames" in recording.notes[0]
    # mp4v writes its index (moov atom) last, so a cut .mp4 does not open at all.
    mp4 = write_video(tmp_path / "cut.mp4", frames, 25.0, "mp4v")
    mp4.write_bytes(mp4.read_bytes()[:-200])
    with pytest.raises(RecordingError, match=r"cut\.mp4: OpenCV cannot open the video"):
        read_recording(mp4)


def test_read_video_missing_file(tmp_path):
    with pytest.raises(RecordingError, match=r"nothere\.mp4: not found"):
        read_recording(tmp_path / "nothere.mp4")


def test_read_unsupported_suffix(tmp_path):
    path = tmp_path / "clip.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(RecordingError, match=r"unsupported file type '\.gif'"):
        read_recording(path)


@pytest.mark.parametrize("pattern", ["frame_{}.png", "f{:05d}.tif"])
def test_read_frame_folder_centikelvin(tmp_path, pattern):
    rng = np.random.default_rng(2)
    celsius = 30.0 + rng.normal(0, 1, (12, 16, 20))
    folder = write_frames(tmp_path / "s09", centikelvin(celsius), pattern)
    recording = read_recording(folder, fps=8.7)
    assert recording.modality == "thermal"
    assert recording.subject_id == "s09"
    assert recording.frames.dtype == np.float32
    assert recording.frames.shape == (12, 16, 20)
    # Natural order: frame_10 and frame_11 must come after frame_9.
    np.testing.assert_allclose(recording.frames, celsius, atol=0.006)
    assert recording.fps == 8.7


def test_read_frame_folder_fps_sidecar(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((3, 4, 4), 25.0)))
    (folder / "fps.txt").write_text("30\n")
    assert read_recording(folder).fps == 30.0
    (folder / "fps.txt").write_text("fast\n")
    with pytest.raises(RecordingError, match=r"fps\.txt: content 'fast' is not a positive frame rate"):
        read_recording(folder)


def test_read_frame_folder_needs_fps(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((3, 4, 4), 25.0)))
    with pytest.raises(RecordingError, match=r"pass fps= or write the rate into .*fps\.txt"):
        read_recording(folder)


def test_read_frame_folder_missing_frame(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((6, 4, 4), 25.0)))
    (folder / "frame_3.png").unlink()
    with pytest.raises(RecordingError, match=r"frame_4\.png: frame number\(s\) 3-3 missing after frame_2\.png"):
        read_recording(folder, fps=9)


def test_read_frame_folder_size_mismatch(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((4, 4, 4), 25.0)))
    cv2.imwrite(str(folder / "frame_2.png"), centikelvin(np.full((5, 4), 25.0)))
    with pytest.raises(RecordingError, match=r"frame_2\.png: frame is 4x5 \(width x height\) but frame_0\.png is 4x4"):
        read_recording(folder, fps=9)


def test_read_frame_folder_8bit_frame(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((4, 4, 4), 25.0)))
    cv2.imwrite(str(folder / "frame_1.png"), np.full((4, 4), 90, dtype=np.uint8))
    with pytest.raises(RecordingError, match=r"frame_1\.png: frame is uint8 \(8-bit\), not 16-bit"):
        read_recording(folder, fps=9)


def test_read_frame_folder_unreadable_frame(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((4, 4, 4), 25.0)))
    (folder / "frame_3.png").write_bytes(b"not a png")
    with pytest.raises(RecordingError, match=r"frame_3\.png: frame is unreadable"):
        read_recording(folder, fps=9)


def test_read_frame_folder_wrong_conversion(tmp_path):
    folder = write_frames(tmp_path / "s", centikelvin(np.full((3, 4, 4), 25.0)))
    with pytest.raises(RecordingError, match=r"median temperature 29815\.0 degC .* pass counts_to_celsius="):
        read_recording(folder, fps=9, counts_to_celsius="celsius")


def test_read_frame_folder_lepton_low_resolution(tmp_path):
    counts = np.round((np.full((3, 4, 4), 34.0) + 273.15) * 10).astype(np.uint16)
    folder = write_frames(tmp_path / "s", counts)
    recording = read_recording(folder, fps=8.7, counts_to_celsius="lepton_tlinear_0.1K")
    np.testing.assert_allclose(recording.frames, 34.0, atol=0.06)


def test_counts_to_celsius_validation():
    assert CONVERSIONS["centikelvin"].apply(np.array([30315], dtype=np.uint16))[0] == pytest.approx(30.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"CountsToCelsius.scale = 0"):
        CountsToCelsius(0.0, 1.0)
    with pytest.raises(ValueError, match=r"counts_to_celsius = 'kelvin' is unknown"):
        read_recording("x.npy", counts_to_celsius="kelvin")


def test_read_npy_celsius_and_counts(tmp_path):
    rng = np.random.default_rng(3)
    celsius = (30 + rng.normal(0, 1, (5, 6, 7))).astype(np.float32)
    np.save(tmp_path / "t.npy", celsius)
    recording = read_recording(tmp_path / "t.npy", fps=9.0)
    np.testing.assert_array_equal(recording.frames, celsius)
    np.save(tmp_path / "c.npy", centikelvin(celsius))
    with pytest.raises(RecordingError, match=r"c\.npy: integer array \(uint16\) contains raw counts"):
        read_recording(tmp_path / "c.npy", fps=9.0)
    recording = read_recording(tmp_path / "c.npy", fps=9.0, counts_to_celsius="centikelvin")
    np.testing.assert_allclose(recording.frames, celsius, atol=0.006)
    with pytest.raises(RecordingError, match=r"t\.npy: an array has no frame rate; pass fps="):
        read_recording(tmp_path / "t.npy")


def test_read_npy_hostile(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(RecordingError, match=r"obj\.npy: not a readable \.npy array"):
        read_recording(tmp_path / "obj.npy", fps=9)
    np.save(tmp_path / "rank2.npy", np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(RecordingError, match=r"rank2\.npy: array is float32 shaped \(4, 4\)"):
        read_recording(tmp_path / "rank2.npy", fps=9)
    # A header that declares 99999 frames over a body of 2 frames.
    path = tmp_path / "huge.npy"
    np.save(path, np.zeros((2, 4, 4), dtype=np.float32))
    path.write_bytes(path.read_bytes().replace(b"(2, 4, 4), }", b"(99999,4,4)}"))
    with pytest.raises(RecordingError, match=r"huge\.npy: not a readable \.npy array"):
        read_recording(path, fps=9)
    np.save(tmp_path / "text.npy", np.array([["a"]], dtype="U1").repeat(3, 0)[None].repeat(2, 0))
    with pytest.raises(RecordingError, match=r"text\.npy: array dtype <U1 is not numeric"):
        read_recording(tmp_path / "text.npy", fps=9)


def test_read_npy_rgb(tmp_path):
    frames = colour_frames(n=3, height=4, width=5)
    np.save(tmp_path / "rgb.npy", frames)
    recording = read_recording(tmp_path / "rgb.npy", fps=30)
    assert recording.modality == "rgb"
    np.testing.assert_array_equal(recording.frames, frames)


def test_read_h5(tmp_path):
    path = tmp_path / "s3.h5"
    celsius = np.full((4, 5, 6), 31.5, dtype=np.float32)
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("thermal/frames", data=celsius)
        dataset.attrs["fps"] = 8.7
        file.create_dataset("timestamps", data=np.arange(4.0))
    recording = read_recording(path)
    assert recording.fps == pytest.approx(8.7)
    np.testing.assert_array_equal(recording.frames, celsius)


def test_read_h5_hostile(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("a", data=np.zeros((3, 4, 4), dtype=np.float32))
        file.create_dataset("b", data=np.zeros((3, 4, 4), dtype=np.float32))
        file.create_dataset("flat", data=np.zeros((4, 4), dtype=np.float32))
        file.create_dataset("words", data=np.array([[[b"x"] * 2] * 2] * 3))
        file.create_dataset("huge", shape=(10**6, 4096, 4096), dtype=np.uint16, chunks=(1, 64, 64))
    with pytest.raises(RecordingError, match=r"bad\.h5: found 4 3-D/4-D datasets .*; pass dataset="):
        read_recording(path, fps=9)
    with pytest.raises(RecordingError, match=r"bad\.h5: array is float32 shaped \(4, 4\)"):
        read_recording(path, fps=9, dataset="flat")
    with pytest.raises(RecordingError, match=r"bad\.h5: array dtype \|S1 is not numeric"):
        read_recording(path, fps=9, dataset="words")
    with pytest.raises(RecordingError, match=r"bad\.h5: frames shaped \(1000000, 4096, 4096\) need .* GiB"):
        read_recording(path, fps=9, dataset="huge", counts_to_celsius="centikelvin")
    with pytest.raises(RecordingError, match=r"bad\.h5: dataset 'nope' not found"):
        read_recording(path, fps=9, dataset="nope")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(RecordingError, match=r"junk\.h5: not a readable HDF5 file"):
        read_recording(junk, fps=9)


@pytest.mark.parametrize("colormap", ["inferno", "ironbow"])
def test_colour_mapped_thermal_video(tmp_path, colormap):
    palette = palette_rgb(colormap)
    ramp = np.linspace(0, 1, 64)
    levels = (np.tile(ramp, (32, 1)) * 255).round().astype(int)
    frames = np.stack([palette[np.roll(levels, shift, axis=1)] for shift in range(6)])
    path = write_video(tmp_path / "thermal.avi", frames, 9.0, "MJPG")
    recording = read_recording(path, modality="thermal", colormap=colormap)
    assert recording.modality == "thermal"
    assert recording.frames.min() >= 0.0
    assert recording.frames.max() <= 1.0
    # MJPG compression moves colours a little; the relative level should stay within ~6 %.
    error = np.abs(recording.frames[0] - levels / 255.0)
    assert float(np.median(error)) < 0.06
    assert recording.notes[0].startswith("units: relative")
    assert any("absolute temperature" in note for note in recording.notes)


def test_greyscale_thermal_video_and_palette_errors(tmp_path):
    grey = np.repeat(np.linspace(0, 255, 64).round().astype(np.uint8)[None, None, :, None], 32, axis=1)
    frames = np.repeat(np.repeat(grey, 3, axis=3), 4, axis=0)
    path = write_video(tmp_path / "grey.avi", frames, 9.0, "MJPG")
    recording = read_recording(path, modality="thermal")
    assert float(np.median(np.abs(recording.frames[0, 16] - np.linspace(0, 1, 64)))) < 0.03
    colour = write_video(tmp_path / "colour.avi", colour_frames(n=3), 9.0, "MJPG")
    with pytest.raises(RecordingError, match=r"colour\.avi: thermal video frames are coloured; pass colormap="):
        read_recording(colour, modality="thermal")
    inferno = write_video(tmp_path / "inferno.avi", palette_rgb("inferno")[np.tile(np.arange(0, 256, 4), (32, 1))][None].repeat(3, 0), 9.0, "MJPG")
    with pytest.raises(RecordingError, match=r"inferno\.avi: frame colours are on average .* from the 'jet' palette"):
        read_recording(inferno, modality="thermal", colormap="jet")
