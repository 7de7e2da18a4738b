"""Save and load PulmoSNN checkpoints without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` dictionary of plain types::

    {"format": "pulmofusion-snn", "format_version": 1,
     "config": SNNConfig.to_dict(), "state_dict": model.state_dict()}

It is read with ``torch.load(..., weights_only=True)``, which rejects any pickled object
other than tensors and plain containers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from neuro.files import atomic_write
from neuro.model import PulmoSNN, SNNConfig

FORMAT = "pulmofusion-snn"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unsafe, of another format or of another shape."""


def save_snn(model: PulmoSNN, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "config": model.config.to_dict(), "state_dict": model.state_dict()}
    return atomic_write(path, lambda temporary: torch.save(payload, temporary))


def load_snn(path: str | os.PathLike) -> PulmoSNN:
    """Load a checkpoint written by ``save_snn``; raise ``CheckpointError`` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path passed to --checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"{path} could not be loaded as a safe PyTorch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); only files written by save_snn are accepted"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a PulmoFusion SNN checkpoint (no format '{FORMAT}')")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this version of the toolkit reads "
            f"version {FORMAT_VERSION}; re-save it with the matching toolkit version"
        )
    try:
        config = SNNConfig.from_dict(dict(payload["config"]))
        model = PulmoSNN(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the configuration or weights do not fit PulmoSNN ({error})") from None
    return model
