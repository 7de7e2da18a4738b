"""Read input spikes for a NIR graph from ``.npy`` or ``.csv`` files.

Accepted layouts, for a graph whose input shape is ``S`` (without batch):

- ``.npy``: ``(T, *S)`` for one sample, or ``(T, B, *S)``; read with ``allow_pickle=False``.
- ``.csv``: one row per time step, one column per input element of one sample in
  C order (``prod(S)`` columns), no header; commas separate values.

Values are usually 0/1 spikes; other finite values are passed on as graded input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


class SpikeInputError(ValueError):
    """An input file that is missing, unreadable, empty or shaped for another graph."""


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".csv":
            if path.stat().st_size == 0:
                return np.empty((0,))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns on a file of blank lines; the size check reports it
                return np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (ValueError, OSError, EOFError) as error:
        raise SpikeInputError(f"{path} could not be read as {suffix[1:].upper()} ({error}); "
                              "check the file format") from None
    raise SpikeInputError(f"{path} has suffix {suffix or '(none)'}; input spikes must be a .npy or .csv file")


def load_spikes(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """Return the spikes in ``path`` as float64 ``(T, B, *input_shape)``."""
    path = Path(path)
    if path.is_dir():
        raise SpikeInputError(f"{path} is a folder; pass the path of a .npy or .csv file to --input")
    if not path.is_file():
        raise SpikeInputError(f"input file {path} not found; check the path passed to --input")
    array = _read_array(path)
    if array.dtype.kind not in "biuf":
        raise SpikeInputError(f"{path} contains {array.dtype} values; input spikes must be real numbers "
                              "(bool, integer or float)")
    if array.size == 0:
        raise SpikeInputError(f"{path} is empty; it must contain at least one time step")
    size = int(np.prod(input_shape))
    shape_text = ", ".join(str(s) for s in input_shape)
    if path.suffix.lower() == ".csv":
        if array.shape[1] != size:
            raise SpikeInputError(
                f"{path} has {array.shape[1]} columns but the graph's input has {size} elements "
                f"(shape ({shape_text})); write one column per input element"
            )
        array = array.reshape(array.shape[0], 1, *input_shape)
    elif array.shape[1:] == tuple(input_shape):
        array = array.reshape(array.shape[0], 1, *input_shape)
    elif array.ndim < 2 or array.shape[2:] != tuple(input_shape):
        raise SpikeInputError(
            f"{path} has shape {array.shape}, but the graph's input needs (T, {shape_text}) or "
            f"(T, B, {shape_text})"
        )
    if 0 in array.shape:
        raise SpikeInputError(f"{path} has shape {array.shape}; a batch or input dimension of size 0 leaves "
                              "nothing to run")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise SpikeInputError(f"{path} contains NaN or infinite values; input spikes must be finite")
    return array
