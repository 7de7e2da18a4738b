"""Save and load PulmoSNN checkpoints without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` dictionary of plain types::

    {"format": "pulmofusion-snn", "format_version": 1,
     "config": SNNConfig.to_dict(), "state_dict": model.state_dict()}

It is read with ``torch.load(..., weights_only=True)``, which rejects any pickled object
other than tensors and plain containers.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from cohort.files import atomic_write
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch also warns on stderr; the error below covers the same problem
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(
            f"{path} could not be loaded as a safe PyTorch checkpoint ({type(error).__name__}): it is corrupt, "
            "or it contains pickled objects other than tensors and plain containers, which are rejected for "
            "safety; only files written by save_snn are accepted"
        ) from None

    if isinstance(payload, dict) and payload.get("format") == "pulmofusion-model":
        raise CheckpointError(f"{path} is a fusion model checkpoint (last.pt); pass the snn.pt next to it, which "
                              "holds the SNN weights alone")
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
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid SNN configuration ({error})") from None
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: the checkpoint has no state_dict of weights")
    _check_weights(path, config, state_dict)
    model = PulmoSNN(config)
    model.load_state_dict(state_dict, strict=True)
    return model


# The default SNN has about 0.07 M parameters; a configuration far larger than any
# plausible one is rejected before memory is allocated for it.
MAX_PARAMETERS = 50_000_000


def _summarise(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _check_weights(path: Path, config: SNNConfig, state_dict: dict) -> None:
    """Compare the checkpoint's tensors with the shapes ``config`` implies, without allocating them."""
    with torch.device("meta"):
        expected = {name: tuple(tensor.shape) for name, tensor in PulmoSNN(config).state_dict().items()}
    parameters = sum(int(torch.Size(shape).numel()) for name, shape in expected.items() if name.endswith(
        ("weight", "bias")))
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its configuration implies {parameters} weights, more than the limit of "
                              f"{MAX_PARAMETERS}; this is not a plausible PulmoSNN checkpoint")
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(name for name in set(expected) & set(state_dict)
                   if not isinstance(state_dict[name], torch.Tensor) or tuple(state_dict[name].shape) != expected[name])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing ({_summarise(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_summarise(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape ({_summarise(wrong)})")
    if problems:
        raise CheckpointError(f"{path}: the weights do not fit the PulmoSNN its configuration describes: "
                              f"{'; '.join(problems)}")
