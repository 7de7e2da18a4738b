"""Read real recordings (video files, radiometric frame folders, arrays) into ``Recording``.

Supported inputs, chosen by the path:

- ``.mp4``/``.avi``/``.mov``: decoded with OpenCV. The default modality is ``"rgb"``
  (BGR converted to RGB). With ``modality="thermal"`` the video is taken as an 8-bit
  false-colour or greyscale thermal video. Its frames are mapped back to a *relative*
  temperature in [0, 1] (see ``invert_palette``), because the absolute temperature
  cannot be recovered from such a video.
- a folder of 16-bit ``.png``/``.tif``/``.tiff`` frames: radiometric thermal frames,
  read in natural name order (``frame_9`` before ``frame_10``). The last number in each
  name is the frame number and must run without gaps. A folder has no frame rate, so
  pass ``fps=`` or put a file ``fps.txt`` containing one number (frames per second)
  in the folder; an explicit ``fps=`` wins.
- ``.npy`` (loaded with ``allow_pickle=False``) and ``.h5`` arrays: ``(F, H, W)`` thermal
  or ``(F, H, W, 3)`` uint8 RGB in RGB order. Float thermal arrays are taken as degC
  unless ``counts_to_celsius`` is given; integer arrays need ``counts_to_celsius``.
  ``fps=`` is required for ``.npy``; an HDF5 dataset may carry an ``fps`` attribute.

Every thermal result is checked for plausibility: a median outside
``PLAUSIBLE_CELSIUS`` almost always means a wrong counts conversion.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cohort.recording import MODALITIES, Recording

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")
FRAME_SUFFIXES = (".png", ".tif", ".tiff")
FPS_SIDECAR = "fps.txt"
# Median scene temperature a thermal recording of a person can have, degC (plausibility limit).
PLAUSIBLE_CELSIUS = (-40.0, 150.0)
# Upper limit on the decoded float32 size, so a hostile header cannot exhaust memory.
DEFAULT_MAX_BYTES = 16 * 2**30
# Mean RGB distance (0-255 units) above which frames do not match the requested palette.
MAX_PALETTE_DISTANCE = 24.0


class RecordingError(ValueError):
    """A recording file or folder that cannot be read; the message names it and the fix."""


@dataclass(frozen=True)
class CountsToCelsius:
    """Linear conversion of raw camera counts to degC: ``celsius = scale * counts + offset``."""

    scale: float
    offset: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"CountsToCelsius.scale = {self.scale!r} is invalid; it must be a finite number > 0 (degC per count)")
        if not math.isfinite(self.offset):
            raise ValueError(f"CountsToCelsius.offset = {self.offset!r} is invalid; it must be a finite number of degC")

    def apply(self, counts: np.ndarray) -> np.ndarray:
        """Convert counts to float32 degC."""
        return (counts.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32)


# Radiometric TIFFs from FLIR tools often store centikelvin; the FLIR Lepton's TLinear
# output is kelvin x 100 (high resolution) or x 10 (low resolution).
CONVERSIONS = {
    "centikelvin": CountsToCelsius(0.01, -273.15, "centikelvin"),
    "lepton_tlinear_0.01K": CountsToCelsius(0.01, -273.15, "lepton_tlinear_0.01K"),
    "lepton_tlinear_0.1K": CountsToCelsius(0.1, -273.15, "lepton_tlinear_0.1K"),
    "celsius": CountsToCelsius(1.0, 0.0, "celsius"),
}


def resolve_conversion(conversion: CountsToCelsius | str | None) -> CountsToCelsius | None:
    """Return the conversion named by ``conversion``: a preset name, an instance or None."""
    if conversion is None:
        return None
    if isinstance(conversion, CountsToCelsius):
        return conversion
    if conversion not in CONVERSIONS:
        raise ValueError(f"counts_to_celsius = {conversion!r} is unknown; use one of {sorted(CONVERSIONS)} or a CountsToCelsius")
    return CONVERSIONS[conversion]


def read_recording(
    path: str | Path,
    *,
    modality: str | None = None,
    subject_id: str | None = None,
    fps: float | None = None,
    counts_to_celsius: CountsToCelsius | str | None = None,
    colormap: str | None = None,
    dataset: str | None = None,
    allow_truncated: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Recording:
    """Read one recording; ``subject_id`` defaults to the file or folder name without suffix.

    ``colormap`` names the palette of an 8-bit thermal video (``"grey"``, ``"ironbow"`` or a
    matplotlib colormap such as ``"inferno"``). ``dataset`` names the HDF5 dataset.
    Raises ``RecordingError`` for any input that cannot be read as asked.
    """
    path = Path(path)
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality = {modality!r} is invalid; it must be one of {MODALITIES} or None")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps = {fps!r} is invalid; it must be a positive number of frames per s")
    conversion = resolve_conversion(counts_to_celsius)
    if not path.exists():
        raise RecordingError(f"{path}: not found; check the path")
    subject = subject_id if subject_id is not None else path.stem
    suffix = path.suffix.lower()

    if path.is_dir():
        if modality == "rgb":
            raise RecordingError(f"{path}: a frame folder is read as radiometric thermal frames; RGB is read from video files")
        frames, fps_used, notes = _read_frame_folder(path, fps, conversion or CONVERSIONS["centikelvin"], max_bytes)
        modality = "thermal"
    elif suffix in VIDEO_SUFFIXES:
        frames, fps_used, notes = _read_video(path, fps, allow_truncated, max_bytes)
        if modality == "thermal":
            frames, palette_notes = invert_palette(frames, colormap, path)
            notes += palette_notes
        else:
            modality = "rgb"
    elif suffix in (".npy", ".h5", ".hdf5"):
        frames, fps_used, notes, modality = _read_array_file(path, suffix, modality, fps, conversion, dataset, max_bytes)
    else:
        raise RecordingError(f"{path}: unsupported file type {suffix!r}; supported are {VIDEO_SUFFIXES + ('.npy', '.h5', '.hdf5')} or a folder of 16-bit frames")

    if modality == "thermal" and not any(note.startswith("units: relative") for note in notes):
        check_plausible_celsius(frames, path)
    logger.info("read %s: %s, %d frames of %s at %.3g fps", path, modality, frames.shape[0], frames.shape[1:], fps_used)
    return Recording(frames=frames, fps=float(fps_used), modality=modality, subject_id=subject, source=path, notes=notes)


def check_plausible_celsius(frames: np.ndarray, path: Path) -> None:
    """Raise ``RecordingError`` when thermal frames contain NaN/inf or an implausible median."""
    if not np.isfinite(frames).all():
        raise RecordingError(f"{path}: thermal frames contain NaN or infinite values; replace them before reading")
    median = float(np.median(frames[:: max(1, frames.shape[0] // 16)]))
    low, high = PLAUSIBLE_CELSIUS
    if not low <= median <= high:
        raise RecordingError(
            f"{path}: median temperature {median:.1f} degC is outside the plausible {low:g} to {high:g} degC; "
            f"the counts conversion is probably wrong, pass counts_to_celsius= (presets: {sorted(CONVERSIONS)})"
        )


def check_size(path: Path, shape: tuple[int, ...], max_bytes: int) -> None:
    """Raise ``RecordingError`` when float32 frames of ``shape`` would exceed ``max_bytes``."""
    n_bytes = 4 * math.prod(int(n) for n in shape)
    if n_bytes > max_bytes:
        raise RecordingError(
            f"{path}: frames shaped {tuple(shape)} need {n_bytes / 2**30:.1f} GiB as float32, more than max_bytes = "
            f"{max_bytes / 2**30:.1f} GiB; cut the recording or raise max_bytes if the size is genuine"
        )


def _fps_from_sidecar(folder: Path, fps: float | None) -> tuple[float, list[str]]:
    sidecar = folder / FPS_SIDECAR
    if fps is not None:
        return fps, [f"fps = {fps:g} given by the caller"]
    if not sidecar.is_file():
        raise RecordingError(f"{folder}: a frame folder has no frame rate; pass fps= or write the rate into {sidecar}")
    text = sidecar.read_text(encoding="utf-8", errors="replace").strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise RecordingError(f"{sidecar}: content {text[:40]!r} is not a positive frame rate; write one number such as 30")
    return value, [f"fps = {value:g} from {FPS_SIDECAR}"]


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _frame_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    if not numbers:
        raise RecordingError(f"{path}: frame file name has no frame number; name frames like frame_0001{path.suffix}")
    return int(numbers[-1])


def _read_frame_folder(folder: Path, fps: float | None, conversion: CountsToCelsius, max_bytes: int):
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
    if not files:
        raise RecordingError(f"{folder}: no .png/.tif/.tiff frames found; put the 16-bit radiometric frames in this folder")
    suffixes = {p.suffix.lower().replace(".tiff", ".tif") for p in files}
    if len(suffixes) > 1:
        raise RecordingError(f"{folder}: frames mix the types {sorted(suffixes)}; keep one sequence per folder")
    if len(files) < 2:
        raise RecordingError(f"{files[0]}: the folder contains a single frame, and one frame cannot contain a blow; add the whole sequence")
    fps_used, notes = _fps_from_sidecar(folder, fps)

    numbers = [_frame_number(p) for p in files]
    for previous, current, number_before, number in zip(files, files[1:], numbers, numbers[1:]):
        if number == number_before:
            raise RecordingError(f"{current}: frame number {number} is also used by {previous.name}; remove the duplicate")
        if number != number_before + 1:
            raise RecordingError(f"{current}: frame number(s) {number_before + 1}-{number - 1} missing after {previous.name}; restore the missing frames")

    first = _read_frame(files[0])
    check_size(folder, (len(files),) + first.shape, max_bytes)
    frames = np.empty((len(files),) + first.shape, dtype=np.float32)
    frames[0] = conversion.apply(first)
    for index, frame_path in enumerate(files[1:], start=1):
        frame = _read_frame(frame_path)
        if frame.shape != first.shape:
            raise RecordingError(
                f"{frame_path}: frame is {frame.shape[1]}x{frame.shape[0]} (width x height) but {files[0].name} is "
                f"{first.shape[1]}x{first.shape[0]}; all frames must share one size"
            )
        frames[index] = conversion.apply(frame)
    notes.append(f"counts converted to degC with {conversion.name}: degC = {conversion.scale:g} * counts + {conversion.offset:g}")
    return frames, fps_used, notes


def _read_frame(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise RecordingError(f"{path}: frame is unreadable (corrupt or not an image); replace or re-export it")
    if frame.ndim != 2:
        raise RecordingError(f"{path}: frame has {frame.shape[2]} channels; radiometric frames must be single-channel 16-bit")
    if frame.dtype != np.uint16:
        raise RecordingError(f"{path}: frame is {frame.dtype} ({8 * frame.dtype.itemsize}-bit), not 16-bit; radiometric sequences need uint16 frames, re-export it as 16-bit")
    return frame


def _read_video(path: Path, fps: float | None, allow_truncated: bool, max_bytes: int):
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise RecordingError(f"{path}: OpenCV cannot open the video (corrupt, empty or unsupported codec); re-encode it, e.g. with ffmpeg to H.264 .mp4")
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        container_fps = float(capture.get(cv2.CAP_PROP_FPS))
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if declared > 0 and width > 0 and height > 0:
            # Decoded RGB is uint8, a quarter of the float32 bytes that check_size counts.
            check_size(path, (declared, height, width, 3), 4 * max_bytes)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()

    if not frames:
        raise RecordingError(f"{path}: no frame could be decoded (empty, truncated or corrupt video); re-export the recording")
    if len(frames) == 1:
        raise RecordingError(f"{path}: the video has one frame, and one frame cannot contain a blow; record the whole blow")
    notes: list[str] = []
    if declared > 0 and len(frames) < declared:
        message = f"{path}: only {len(frames)} of the {declared} frames declared by the container could be decoded"
        if not allow_truncated:
            raise RecordingError(f"{message}; the file is truncated or corrupt. Re-export it, or pass allow_truncated=True to keep the decoded frames")
        logger.warning("%s; keeping them (allow_truncated=True)", message)
        notes.append(message)

    if fps is not None:
        if container_fps > 0 and abs(fps - container_fps) > 0.01 * container_fps:
            notes.append(f"fps = {fps:g} given by the caller overrides the container's {container_fps:g}")
        fps_used = fps
    elif container_fps > 0 and math.isfinite(container_fps):
        fps_used = container_fps
    else:
        raise RecordingError(f"{path}: the container gives no frame rate; pass fps=")
    return np.stack(frames), fps_used, notes


def palette_rgb(colormap: str, levels: int = 256) -> np.ndarray:
    """Return the ``(levels, 3)`` uint8 RGB palette of ``colormap``, coldest entry first."""
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap

    if colormap in ("grey", "gray"):
        ramp = np.linspace(0, 255, levels).round().astype(np.uint8)
        return np.repeat(ramp[:, None], 3, axis=1)
    if colormap == "ironbow":
        # NOTE: an approximation of FLIR's Ironbow (black, indigo, magenta, orange, yellow,
        # white), not FLIR's own table, so frames from FLIR software decode with some error.
        anchors = ["#000000", "#20008c", "#9a009f", "#e8400e", "#fdb900", "#ffffff"]
        cmap = LinearSegmentedColormap.from_list("ironbow", anchors)
    elif colormap in colormaps:
        cmap = colormaps[colormap]
    else:
        raise ValueError(f"colormap = {colormap!r} is unknown; use 'grey', 'ironbow' or a matplotlib colormap name such as 'inferno'")
    return (cmap(np.linspace(0.0, 1.0, levels))[:, :3] * 255).round().astype(np.uint8)


def invert_palette(frames: np.ndarray, colormap: str | None, path: Path) -> tuple[np.ndarray, list[str]]:
    """Map false-colour RGB frames to relative temperature in [0, 1] by the nearest palette entry.

    With ``colormap=None`` the frames must be greyscale (channels within 8 levels), read as luminance.
    """
    # Tolerance of 8 levels between channels absorbs chroma noise from lossy codecs.
    channel_spread = frames.max(axis=-1).astype(np.int16) - frames.min(axis=-1)
    is_grey = bool(np.all(channel_spread <= 8))
    if colormap is None and not is_grey:
        raise RecordingError(f"{path}: thermal video frames are coloured; pass colormap= with the palette the camera used ('ironbow', 'inferno', ...)")
    name = colormap or "grey"
    palette = palette_rgb(name).astype(np.float32)

    packed = (frames[..., 0].astype(np.int32) << 16) | (frames[..., 1].astype(np.int32) << 8) | frames[..., 2]
    colours, inverse = np.unique(packed.ravel(), return_inverse=True)
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float32)
    index = np.empty(len(colours), dtype=np.int64)
    distance = np.empty(len(colours), dtype=np.float32)
    for start in range(0, len(colours), 4096):
        chunk = rgb[start : start + 4096]
        squared = ((chunk[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
        index[start : start + 4096] = squared.argmin(axis=1)
        distance[start : start + 4096] = np.sqrt(squared.min(axis=1))
    counts = np.bincount(inverse.ravel(), minlength=len(colours))
    mean_distance = float((distance * counts).sum() / counts.sum())
    if mean_distance > MAX_PALETTE_DISTANCE:
        raise RecordingError(
            f"{path}: frame colours are on average {mean_distance:.0f} RGB units from the {name!r} palette "
            f"(limit {MAX_PALETTE_DISTANCE:g}); pass the colormap the camera used"
        )
    relative = (index[inverse].reshape(packed.shape) / (len(palette) - 1)).astype(np.float32)
    notes = [
        "units: relative temperature in [0, 1] (0 = coldest palette entry, 1 = hottest), not degC",
        f"decoded from an 8-bit {name!r} video by nearest palette entry (mean colour error {mean_distance:.1f} RGB units)",
        "lost: absolute temperature, resolution finer than 256 levels, and comparability between frames "
        "if the camera changed its palette span (auto gain) during the recording",
    ]
    return relative, notes


def _read_array_file(path, suffix, modality, fps, conversion, dataset, max_bytes):
    notes: list[str] = []
    if suffix == ".npy":
        try:
            # mmap reads only the header, so the declared shape is checked before any data is loaded.
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise RecordingError(f"{path}: not a readable .npy array ({error}); save it with numpy.save and no object dtype") from error
        data_fps = None
    else:
        array, data_fps, file = _open_h5_dataset(path, dataset)
    try:
        if array.dtype.kind not in "iuf" or array.dtype.fields is not None:
            raise RecordingError(f"{path}: array dtype {array.dtype} is not numeric; store temperatures or counts as numbers")
        is_rgb = array.ndim == 4 and array.shape[-1] == 3
        if modality is None:
            modality = "rgb" if is_rgb else "thermal"
        expected = "(frames, height, width, 3) uint8" if modality == "rgb" else "(frames, height, width)"
        if (modality == "rgb" and not (is_rgb and array.dtype == np.uint8)) or (modality == "thermal" and array.ndim != 3):
            raise RecordingError(f"{path}: array is {array.dtype} shaped {array.shape}; {modality} arrays must be {expected}")
        if array.shape[0] < 2:
            raise RecordingError(f"{path}: the array has {array.shape[0]} frame(s), and one frame cannot contain a blow; store the whole blow")
        check_size(path, array.shape, max_bytes)
        if modality == "rgb":
            frames = np.ascontiguousarray(array[...], dtype=np.uint8)
        elif conversion is not None:
            frames = conversion.apply(np.asarray(array[...]))
            notes.append(f"counts converted to degC with {conversion.name}: degC = {conversion.scale:g} * counts + {conversion.offset:g}")
        elif array.dtype.kind == "f":
            frames = np.asarray(array[...], dtype=np.float32)
            notes.append("array values taken as degC")
        else:
            raise RecordingError(f"{path}: integer array ({array.dtype}) contains raw counts; pass counts_to_celsius= (presets: {sorted(CONVERSIONS)})")
    except OSError as error:
        raise RecordingError(f"{path}: reading the array failed ({error}); the file is truncated or corrupt") from error
    finally:
        if suffix != ".npy":
            file.close()

    if fps is not None:
        fps_used = fps
    elif data_fps is not None:
        fps_used = data_fps
        notes.append(f"fps = {data_fps:g} from the dataset's fps attribute")
    else:
        raise RecordingError(f"{path}: an array has no frame rate; pass fps=" + ("" if suffix == ".npy" else " or set the dataset attribute fps"))
    return frames, fps_used, notes, modality


def _open_h5_dataset(path: Path, dataset: str | None):
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise RecordingError(f"{path}: not a readable HDF5 file ({error}); check that the file is complete") from error
    try:
        if dataset is None:
            candidates = []
            file.visititems(lambda name, item: candidates.append(name) if isinstance(item, h5py.Dataset) and item.ndim in (3, 4) else None)
            if len(candidates) != 1:
                raise RecordingError(f"{path}: found {len(candidates)} 3-D/4-D datasets {candidates[:8]}; pass dataset= with the one to read")
            dataset = candidates[0]
        item = file.get(dataset)
        if not isinstance(item, h5py.Dataset):
            raise RecordingError(f"{path}: dataset {dataset!r} not found; datasets are {list(file.keys())[:8]}")
        fps_attribute = item.attrs.get("fps")
        data_fps = None
        if fps_attribute is not None:
            try:
                data_fps = float(np.asarray(fps_attribute).reshape(-1)[0])
            except (TypeError, ValueError, IndexError):
                data_fps = float("nan")
            if not (math.isfinite(data_fps) and data_fps > 0):
                raise RecordingError(f"{path}: dataset {dataset!r} has fps attribute {fps_attribute!r}, not a positive number; fix it or pass fps=")
        return item, data_fps, file
    except BaseException:
        file.close()
        raise
