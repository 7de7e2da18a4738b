"""Continuous recordings of a person blowing, and the breathing cycles cut out of them.

A ``Recording`` is what a reader returns and what the simulator renders: every frame of
one session, before segmentation.  Layout:

- thermal: float32 ``(frames, height, width)`` in degrees Celsius;
- RGB: uint8 ``(frames, height, width, 3)`` in RGB channel order (OpenCV's BGR is
  converted on reading).

A ``Cycle`` is one blow inside a recording, given by frame indices (start inclusive,
end exclusive) on the recording's own frame clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODALITIES = ("thermal", "rgb")


@dataclass
class Recording:
    """All frames of one session, with the camera's frame rate and where they came from.

    ``subject_id`` links the recording to a metadata row; ``source`` is the file or
    folder it was read from (None for simulated data); ``notes`` lists anything the
    reader had to assume or lost (for example the colour map of an 8-bit thermal video).
    """

    frames: np.ndarray
    fps: float
    modality: str
    subject_id: str
    source: Path | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"Recording.modality = {self.modality!r} is invalid; it must be one of {MODALITIES}")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"Recording.fps = {self.fps!r} is invalid; it must be a positive number of frames per s")
        expected_ndim = 3 if self.modality == "thermal" else 4
        if self.frames.ndim != expected_ndim or (self.modality == "rgb" and self.frames.shape[-1] != 3):
            layout = "(frames, height, width)" if self.modality == "thermal" else "(frames, height, width, 3)"
            raise ValueError(f"{self.modality} frames must be shaped {layout}, got {self.frames.shape}")
        if self.frames.shape[0] < 1:
            raise ValueError("a recording needs at least one frame")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps


@dataclass(frozen=True)
class Cycle:
    """One blow: frames ``start`` (inclusive) to ``end`` (exclusive) of a recording.

    ``quality`` is in [0, 1] (1 = clean, clearly shaped blow); ground-truth cycles from
    the simulator carry 1.0.
    """

    start: int
    end: int
    quality: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"Cycle frames [{self.start}, {self.end}) are invalid; need 0 <= start < end")

    @property
    def length(self) -> int:
        return self.end - self.start
