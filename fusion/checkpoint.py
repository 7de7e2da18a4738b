"""Checkpoints of trained fold models, readable without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` dictionary of tensors, numbers, strings, lists and dicts::

    {"format": "pulmofusion-model", "format_version": 1,
     "config": ExperimentConfig.to_dict(), "config_hash": str, "cohort": sha256 hex,
     "branch": "snn" | "x3d", "fold": int, "epoch": int (completed epochs),
     "model": state_dict, "optimizer": state_dict,
     "target_mean": [pef, fev1_fvc], "target_std": [pef, fev1_fvc], "class_weights": [w0, w1],
     "train_ids": [...], "test_ids": [...], "history": [{"epoch", "loss", "seconds"}, ...]}

It is read with ``torch.load(..., weights_only=True)``.  ``cohort_identity`` hashes the
store's subject ids, clip tables and clip shapes, so a checkpoint records which cohort it
was trained on and evaluation can refuse another one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from cohort.files import atomic_write
from cohort.store import open_store_file
from cohort.store_format import CLIP_FIELDS, read_dataset, read_text

logger = logging.getLogger(__name__)

FORMAT = "pulmofusion-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("config", "config_hash", "cohort", "branch", "fold", "epoch", "model", "optimizer", "target_mean",
                 "target_std", "class_weights", "train_ids", "test_ids", "history")


class CheckpointError(ValueError):
    """A model checkpoint that is missing, unsafe, corrupt or of another format or version."""


def cohort_identity(store_path: str | os.PathLike) -> str:
    """Return a SHA-256 hex digest over the store's subject ids, clip tables and clip shapes."""
    store_path = Path(store_path)
    digest = hashlib.sha256()
    handle = open_store_file(store_path, "r")
    try:
        subjects = handle["subjects"]
        for subject_id in sorted(subjects.keys()):
            digest.update(f"subject:{subject_id}\n".encode())
            recordings = subjects[subject_id]["recordings"]
            for name in sorted(recordings.keys()):
                group = recordings[name]
                modality = read_text(group, "modality", store_path)
                clips = read_dataset(group, "clips", store_path, ndim=4 if modality == "thermal" else 5)
                digest.update(f"recording:{name}:{modality}:{tuple(clips.shape)}\n".encode())
                for field in CLIP_FIELDS:
                    values = np.ascontiguousarray(read_dataset(group, field, store_path, ndim=1)[()])
                    digest.update(field.encode())
                    digest.update(values.astype(values.dtype.newbyteorder("<")).tobytes())
    finally:
        handle.close()
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (the keys of ``REQUIRED_KEYS``) with format and version, atomically."""
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    content = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(Path(path), lambda temporary: torch.save(content, temporary))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by ``save_checkpoint``; raise ``CheckpointError`` naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train the experiment first (python -m fusion train)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"{path} could not be loaded as a safe PyTorch checkpoint ({type(error).__name__}): it is corrupt or "
            "contains pickled objects other than tensors and plain containers; delete it and train again"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a PulmoFusion model checkpoint (format {found!r}, expected {FORMAT!r}); "
                              "pass a last.pt written by python -m fusion train")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version!r}; this toolkit reads version {FORMAT_VERSION}; "
                              "train again with this version")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks the keys {missing}; it is incomplete, so delete it and train again")
    if not isinstance(payload["model"], dict) or not isinstance(payload["config"], dict):
        raise CheckpointError(f"{path}: 'model' and 'config' must be dicts; delete the file and train again")
    return payload
