"""X3D-S video CNN from pytorchvideo 0.1.5 with a regression head, and safe checkpoint loading.

Data flow in layout ``(B, C, T, H, W)``, where ``C`` is 1 for thermal clips and 3 for RGB::

    clip (B, C, T, H, W)
      -> stem: 1x3x3 conv (stride 1, 2, 2), 5x1x1 depthwise conv, BN, ReLU     blocks.0
      -> stages 1-4: X3D bottlenecks with SE and Swish, spatial stride 2 each blocks.1-4
      -> head: 1x1x1 conv 192->432, BN, ReLU, global average pool,
               1x1x1 conv 432->2048, ReLU, dropout, linear 2048->num_outputs   blocks.5
      -> (B, num_outputs)

pytorchvideo's ``pytorchvideo.models.head`` runs ``from torchvision.ops import RoIAlign``
at import time, although X3D never uses RoIAlign. torchvision cannot be installed next to
the CPU build of torch 2.13 here, so ``import_pytorchvideo`` puts a stub ``torchvision``
into ``sys.modules`` for the duration of that import only.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import sys
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Default regression targets, in output order: PEF (L/s) and FEV1/FVC.
DEFAULT_TARGETS = ("pef", "fev1_fvc")

# X3D-S as defined by pytorchvideo 0.1.5 (pytorchvideo/models/hub/x3d.py: x3d_s passes
# input_clip_length=13 and input_crop_size=160, create_x3d's defaults give the rest).
X3D_S_CONFIG = {
    "input_clip_length": 13,
    "input_crop_size": 160,
    "width_factor": 2.0,
    "depth_factor": 2.2,
    "bottleneck_factor": 2.25,
    "se_ratio": 0.0625,
    "stem_dim_in": 12,
    "head_dim_out": 2048,
}

# pytorchvideo names the 1x3x3 spatial stem convolution ``conv_t`` (its create_x3d_stem
# swaps the two names). This weight, shaped (24, in_channels, 1, 3, 3), is the only one
# whose shape depends on the input channels.
STEM_CONV_KEY = "blocks.0.conv.conv_t.weight"

_IMPORT_LOCK = threading.Lock()


class CheckpointError(ValueError):
    """Error for a checkpoint file that cannot be loaded into the model, naming the file."""


def _torchvision_ops_importable() -> bool:
    try:
        importlib.import_module("torchvision.ops")
    except (ImportError, RuntimeError, OSError) as error:
        # A broken install raises RuntimeError (missing C++ operators) or OSError (libraries).
        logger.debug("torchvision.ops cannot be imported (%s: %s)", type(error).__name__, error)
        return False
    return True


def _torchvision_stubs() -> dict[str, types.ModuleType]:
    """Create stand-ins for ``torchvision``, ``torchvision.ops`` (whose RoIAlign raises on use) and an empty ``torchvision.transforms``."""

    class RoIAlign(nn.Module):
        """Placeholder for torchvision.ops.RoIAlign, which raises because torchvision is not installed."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ImportError(
                "torchvision.ops.RoIAlign is not available: torchvision is not installed, and "
                "pytorchvideo was imported with a placeholder. Models with an RoI head (for example "
                "pytorchvideo's detection heads) need a working torchvision install."
            )

    package = types.ModuleType("torchvision")
    package.__doc__ = "Temporary placeholder used only while pytorchvideo is imported."
    ops = types.ModuleType("torchvision.ops")
    ops.RoIAlign = RoIAlign
    package.ops = ops
    transforms = types.ModuleType("torchvision.transforms")
    package.transforms = transforms
    return {"torchvision": package, "torchvision.ops": ops, "torchvision.transforms": transforms}


def import_without_torchvision(module_name: str) -> types.ModuleType:
    """Import ``module_name`` with torchvision stand-ins in place when torchvision is missing.

    pytorchvideo 0.1.5 and lava-dl 0.6 import ``torchvision.ops`` (and lava-dl also
    ``torchvision.transforms``) at import time, for parts this project never uses.  When
    ``torchvision.ops`` imports, this is a plain import.  Otherwise the stand-ins of
    ``_torchvision_stubs`` are placed in ``sys.modules`` (only for names not already
    there), the module is imported, and the stand-ins are removed again, also on failure.

    NOTE: another thread that imports torchvision while this import runs would see the
    stand-ins.  The lock only serialises calls of this function.
    """
    with _IMPORT_LOCK:
        if module_name in sys.modules:
            return sys.modules[module_name]
        if _torchvision_ops_importable():
            return importlib.import_module(module_name)

        stubs = _torchvision_stubs()
        installed = [name for name in stubs if name not in sys.modules]
        for name in installed:
            sys.modules[name] = stubs[name]
        try:
            module = importlib.import_module(module_name)
        finally:
            for name in installed:
                if sys.modules.get(name) is stubs[name]:
                    del sys.modules[name]
        logger.debug("imported %s with a placeholder torchvision, since removed", module_name)
        return module


def import_pytorchvideo(module_name: str = "pytorchvideo.models.x3d") -> types.ModuleType:
    """Import a ``pytorchvideo.models`` module through ``import_without_torchvision``.

    pytorchvideo keeps a reference to the stand-in ``RoIAlign``, which raises
    ImportError when instantiated.
    """
    if not module_name.startswith("pytorchvideo.models"):
        raise ValueError(f"module_name must name a module under pytorchvideo.models, got {module_name!r}")
    return import_without_torchvision(module_name)


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def build_x3d_s(*, num_outputs: int = 2, in_channels: int = 1, dropout_rate: float = 0.5) -> nn.Module:
    """Build X3D-S with a linear regression head of ``num_outputs`` values.

    The backbone and head layers are those of pytorchvideo's X3D-S (``X3D_S_CONFIG``),
    so a Kinetics X3D-S state dict fits everything except the final linear layer. Two
    changes adapt it to our clips:

    * The stem takes ``in_channels`` channels. Thermal clips use 1, which saves the work
      of repeating a grey channel three times. ``load_checkpoint`` converts a 3-channel
      stem by summing over the colour channels, which equals feeding the grey clip
      repeated on three channels.
    * The head pools with ``AdaptiveAvgPool3d(1)`` in place of pytorchvideo's fixed
      ``AvgPool3d`` whose kernel is computed from a 13 x 160 x 160 input. Any clip length
      and frame size is accepted, for example (B, 1, 30, 224, 224), and the result
      equals pytorchvideo's for the nominal input size.

    The head has no activation, so the outputs are unbounded regression values
    (by default in the order of ``DEFAULT_TARGETS``).

    Raises:
        ValueError: when an argument is out of range. The message names it.
    """
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs must be an integer >= 1, got {num_outputs!r}")
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (thermal) or 3 (RGB), got {in_channels!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")

    x3d = import_pytorchvideo("pytorchvideo.models.x3d")
    model = x3d.create_x3d(
        input_channel=in_channels,
        model_num_class=num_outputs,
        dropout_rate=dropout_rate,
        head_activation=None,
        **X3D_S_CONFIG,
    )
    model.blocks[-1].pool.pool = nn.AdaptiveAvgPool3d(1)
    return model


@dataclass(frozen=True)
class CheckpointLoad:
    """Outcome of ``load_checkpoint``.

    Attributes:
        loaded_keys: state-dict keys copied from the file.
        skipped_head_keys: head keys of the file that did not fit the model and were ignored.
        missing_head_keys: head keys of the model absent from the file, which keep their values.
        adapted_keys: keys converted on load (a 3-channel stem summed to 1 channel).
    """

    loaded_keys: tuple[str, ...]
    skipped_head_keys: tuple[str, ...]
    missing_head_keys: tuple[str, ...]
    adapted_keys: tuple[str, ...]


def _read_checkpoint(path: Path) -> object:
    if not path.exists():
        raise CheckpointError(f"checkpoint file not found: {path}. Pass the path of a local .pt or .pyth file.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a regular file. Pass the path of a .pt or .pyth file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):
            raise CheckpointError(
                f"checkpoint {path} contains Python objects other than tensors and plain containers, "
                "which torch.load(weights_only=True) rejects because unpickling them could run code. "
                "In a trusted environment, re-save only the weights with "
                "torch.save(model.state_dict(), path)."
            ) from error
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint or is corrupt, because the weights-only "
            "unpickler failed. Save the weights with torch.save(model.state_dict(), path)."
        ) from error
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} could not be read: {error}") from error
    except Exception as error:
        # With torch 2.13, malformed files raised RuntimeError, EOFError, KeyError or
        # IndexError. Each means that the file is not a readable checkpoint.
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint or is corrupt "
            f"({type(error).__name__}: {error}). Save the weights with torch.save(model.state_dict(), path)."
        ) from error


def _extract_state_dict(content: object, path: Path) -> dict[str, torch.Tensor]:
    """Return the state dict of a plain state dict or of a training checkpoint.

    pytorchvideo's model zoo and PySlowFast store it under ``model_state``, many training
    scripts under ``state_dict``.
    """
    if isinstance(content, Mapping):
        for key in ("model_state", "state_dict"):
            if key in content and isinstance(content[key], Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not content:
        raise CheckpointError(
            f"checkpoint {path} contains {type(content).__name__}, not a state dict. Expected a "
            "non-empty mapping of parameter names to tensors, or one under 'model_state' or 'state_dict'."
        )
    non_tensors = [str(key) for key, value in content.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"checkpoint {path} is not a state dict: entries {non_tensors[:5]} are not tensors"
        )
    return {str(key): value for key, value in content.items()}


def _head_prefix(model: nn.Module) -> str | None:
    """Return the state-dict prefix of the head (the last block of a pytorchvideo Net)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
        return f"blocks.{len(blocks) - 1}."
    return None


def _summarise(keys: list[str], limit: int = 8) -> str:
    listed = ", ".join(keys[:limit])
    return listed if len(keys) <= limit else f"{listed}, ... ({len(keys)} in all)"


def load_checkpoint(model: nn.Module, path: str | Path) -> CheckpointLoad:
    """Load a local checkpoint into ``model`` with ``torch.load(..., weights_only=True)``.

    Accepted files contain a state dict, or a dict with the state dict under
    ``model_state`` (pytorchvideo model zoo) or ``state_dict``. Every backbone tensor
    must be present with the model's shape, except batch-norm ``num_batches_tracked``
    counters, which keep their values when absent. In the head (the model's last block),
    tensors whose names or shapes differ, such as a 400-class Kinetics classifier, are
    skipped with a warning and keep their current values. A 3-channel stem is summed
    to 1 channel when the model has a 1-channel stem.

    NOTE: not checked against the official pytorchvideo X3D_S.pyth. Its extra entries
    (epoch, optimizer state) may contain types that the weights-only unpickler rejects.

    Raises:
        CheckpointError: when the file is missing, unreadable, not a state dict, needs
            unsafe unpickling, or its backbone does not match the model. The message
            names the file and states what to change.
    """
    path = Path(path)
    state = _extract_state_dict(_read_checkpoint(path), path)
    expected = model.state_dict()
    head_prefix = _head_prefix(model)

    def is_head(key: str) -> bool:
        return head_prefix is not None and key.startswith(head_prefix)

    adapted: list[str] = []
    stem = state.get(STEM_CONV_KEY)
    target = expected.get(STEM_CONV_KEY)
    if stem is not None and target is not None and stem.dim() == 5 and stem.shape[1] == 3 and target.shape[1] == 1:
        state[STEM_CONV_KEY] = stem.sum(dim=1, keepdim=True)
        adapted.append(STEM_CONV_KEY)
        logger.info("summed the 3-channel stem of %s to 1 channel (%s)", path, STEM_CONV_KEY)

    # Older checkpoints lack the batch-norm step counters, which are bookkeeping and not weights.
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]

    backbone_problems: list[str] = []
    if backbone_missing := [key for key in missing if not is_head(key)]:
        backbone_problems.append(f"missing keys: {_summarise(backbone_missing)}")
    if backbone_unexpected := [key for key in unexpected if not is_head(key)]:
        backbone_problems.append(f"unexpected keys: {_summarise(backbone_unexpected)}")
    if backbone_mismatched := [key for key in mismatched if not is_head(key)]:
        shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}" for key in backbone_mismatched]
        backbone_problems.append(f"shape mismatches (file vs model): {_summarise(shapes)}")
    if backbone_problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model's backbone: {'; '.join(backbone_problems)}. "
            "Build the model with the configuration the checkpoint was trained with "
            "(for pytorchvideo's X3D-S: build_x3d_s with in_channels 1 or 3)."
        )

    skipped = sorted(key for key in unexpected + mismatched if is_head(key))
    missing_head = sorted(key for key in missing if is_head(key))
    if skipped or missing_head:
        logger.warning(
            "checkpoint %s: skipped head tensors that do not fit the model (%s). Head tensors "
            "absent from the file (%s) keep their current values.",
            path,
            _summarise(skipped) or "none",
            _summarise(missing_head) or "none",
        )

    loadable = {key: value for key, value in state.items() if key in expected and key not in skipped}
    model.load_state_dict(loadable, strict=False)
    logger.info("loaded %d tensors from %s", len(loadable), path)
    return CheckpointLoad(
        loaded_keys=tuple(sorted(loadable)),
        skipped_head_keys=tuple(skipped),
        missing_head_keys=tuple(missing_head),
        adapted_keys=tuple(adapted),
    )
