"""Experiment configuration: typed sections read from a TOML or YAML file and checked up front.

A configuration file has the sections ``data``, ``snn``, ``x3d``, ``fusion``, ``training``
and ``augment``; every key is optional and defaults to the dataclass field below.  An
unknown key, a value of the wrong type or an impossible value raises ``ConfigError``
naming the dotted key, for example ``training.lr = -1 is invalid: it must be > 0``,
before any data is read or any model is built.

The ``snn`` section takes every ``neuro.model.SNNConfig`` field plus ``steps_per_frame``
and ``rate_scale``.  ``ExperimentConfig.to_dict`` gives plain values that checkpoints
store, ``ExperimentConfig.from_dict`` reads them back, and ``config_hash`` is a SHA-256
over the canonical JSON form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fusion.augment import AugmentConfig
from neuro.model import SNNConfig

logger = logging.getLogger(__name__)

MODALITIES = ("thermal", "rgb")
LABEL_RULES = ("fixed_ratio", "lln")
FUSION_MODES = ("attention", "concat", "none")
BRANCHES = ("snn", "x3d")


class ConfigError(ValueError):
    """A configuration with an unknown key, a wrong type or an impossible value."""


def _invalid(key: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r} is invalid: it must be {allowed}")


class _Section:
    """Shared checks of the section dataclasses; ``NAME`` is the section's key in the file."""

    NAME: ClassVar[str] = ""

    def _require(self, name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise _invalid(f"{self.NAME}.{name}", getattr(self, name), allowed)


@dataclass(frozen=True)
class DataConfig(_Section):
    """Data selection: modality, label rule and the subject-wise cross-validation split."""

    NAME: ClassVar[str] = "data"
    modality: str = "thermal"
    label: str = "fixed_ratio"
    folds: int = 5
    fold_seed: int = 0

    def __post_init__(self) -> None:
        self._require("modality", self.modality in MODALITIES, f"one of {MODALITIES}")
        self._require("label", self.label in LABEL_RULES, f"one of {LABEL_RULES}")
        self._require("folds", self.folds >= 2, "an integer >= 2")


@dataclass(frozen=True)
class SNNBranchConfig(_Section):
    """The spiking branch: the network, the rate code and the readout scale.

    ``steps_per_frame`` is the number of Bernoulli spike frames per video frame.
    ``rate_scale`` multiplies output firing rates (spikes per step, in [0, 1]) to form
    the logits of the spike-count cross-entropy loss.
    """

    NAME: ClassVar[str] = "snn"
    network: SNNConfig = field(default_factory=SNNConfig)
    steps_per_frame: int = 1
    rate_scale: float = 10.0

    def __post_init__(self) -> None:
        self._require("steps_per_frame", self.steps_per_frame >= 1, "an integer >= 1")
        self._require("rate_scale", self.rate_scale > 0, "> 0")

    def to_dict(self) -> dict:
        return {**self.network.to_dict(), "steps_per_frame": self.steps_per_frame, "rate_scale": self.rate_scale}


@dataclass(frozen=True)
class X3DConfig(_Section):
    """The X3D-S regressor's input and optional local pretrained checkpoint.

    ``size`` is the frame height and width in pixels, ``frames`` the clip length fed to
    the network, ``dropout`` the head dropout rate.  ``pretrained`` is the path of a
    local X3D-S state dict (empty: train from scratch).
    """

    NAME: ClassVar[str] = "x3d"
    size: int = 64
    frames: int = 16
    dropout: float = 0.0
    pretrained: str = ""

    def __post_init__(self) -> None:
        self._require("size", self.size >= 16, "an integer >= 16 pixels")
        self._require("frames", self.frames >= 1, "an integer >= 1")
        self._require("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)")


@dataclass(frozen=True)
class FusionConfig(_Section):
    """Fusion of video features with metadata: ``attention``, ``concat`` or ``none`` (video only)."""

    NAME: ClassVar[str] = "fusion"
    mode: str = "attention"
    embed_dim: int = 32
    heads: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self._require("mode", self.mode in FUSION_MODES, f"one of {FUSION_MODES}")
        self._require("embed_dim", self.embed_dim >= 1, "an integer >= 1")
        self._require("heads", self.heads >= 1 and self.embed_dim % max(self.heads, 1) == 0,
                      f"an integer >= 1 that divides fusion.embed_dim = {self.embed_dim}")
        self._require("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)")


@dataclass(frozen=True)
class TrainingConfig(_Section):
    """Optimisation settings shared by both branches.

    ``batch_size`` is the global batch (split over processes under DDP).  ``lr`` and
    ``weight_decay`` are AdamW settings.  With ``balance_classes``, class imbalance is
    handled by weighting each sample's loss (classification and regression) by
    ``n / (2 * n_class)`` of its class, counted on the training fold.  The loss weights
    scale the SNN spike-count loss, the fused-logit loss and the two standardised
    regression losses.
    """

    NAME: ClassVar[str] = "training"
    branches: tuple[str, ...] = ("snn", "x3d")
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    balance_classes: bool = True
    snn_loss_weight: float = 1.0
    fusion_loss_weight: float = 1.0
    pef_loss_weight: float = 1.0
    fev1_fvc_loss_weight: float = 1.0

    def __post_init__(self) -> None:
        self._require("branches", len(self.branches) >= 1 and set(self.branches) <= set(BRANCHES)
                      and len(set(self.branches)) == len(self.branches), f"a non-empty list of distinct {BRANCHES}")
        self._require("epochs", self.epochs >= 1, "an integer >= 1")
        self._require("batch_size", self.batch_size >= 1, "an integer >= 1")
        self._require("lr", self.lr > 0, "> 0")
        self._require("weight_decay", self.weight_decay >= 0, ">= 0")
        for name in ("snn_loss_weight", "fusion_loss_weight", "pef_loss_weight", "fev1_fvc_loss_weight"):
            self._require(name, getattr(self, name) >= 0, ">= 0")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: one modality, one or both branches, all folds."""

    data: DataConfig = field(default_factory=DataConfig)
    snn: SNNBranchConfig = field(default_factory=SNNBranchConfig)
    x3d: X3DConfig = field(default_factory=X3DConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        plain = {name: _plain(dataclasses.asdict(getattr(self, name)))
                 for name in ("data", "x3d", "fusion", "training", "augment")}
        plain["snn"] = self.snn.to_dict()
        return plain

    @classmethod
    def from_dict(cls, values: typing.Mapping) -> ExperimentConfig:
        """Build and check a configuration from nested plain values; raise ``ConfigError`` naming the key."""
        if not isinstance(values, typing.Mapping):
            raise ConfigError(f"a configuration must be a mapping of sections, got {type(values).__name__}")
        sections = {"data": DataConfig, "x3d": X3DConfig, "fusion": FusionConfig, "training": TrainingConfig,
                    "augment": AugmentConfig}
        unknown = sorted(set(values) - set(sections) - {"snn"})
        if unknown:
            raise ConfigError(f"unknown section {unknown[0]!r}; allowed sections are {sorted([*sections, 'snn'])}")
        built = {name: _build_section(kind, name, _section_values(values, name)) for name, kind in sections.items()}
        built["snn"] = _build_snn(_section_values(values, "snn"))
        return cls(**built)

    def hash(self) -> str:
        """Return the SHA-256 hex digest of the canonical JSON form of ``to_dict``."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _plain(values: dict) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def _section_values(values: typing.Mapping, name: str) -> dict:
    section = values.get(name, {})
    if section is None:
        return {}
    if not isinstance(section, typing.Mapping):
        raise ConfigError(f"{name} = {section!r} is invalid: it must be a section of keys (a table)")
    return dict(section)


def _check_type(key: str, value: object, kind: object) -> object:
    """Return ``value`` converted to ``kind`` (int, float, str, bool, tuple[str, ...]) or raise naming ``key``."""
    if kind is bool:
        if not isinstance(value, bool):
            raise _invalid(key, value, "true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(key, value, "an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _invalid(key, value, "a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise _invalid(key, value, "a string")
        return value
    if typing.get_origin(kind) is tuple:
        item_kind = typing.get_args(kind)[0]
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise _invalid(key, value, "a list")
        return tuple(_check_type(f"{key}[{index}]", item, item_kind) for index, item in enumerate(value))
    raise TypeError(f"no type check for {kind!r}")


def _build_section(kind: type, name: str, values: dict) -> object:
    hints = typing.get_type_hints(kind)
    allowed = [item.name for item in dataclasses.fields(kind)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key {name}.{unknown[0]}; allowed keys in [{name}] are {allowed}")
    checked = {key: _check_type(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    try:
        return kind(**checked)
    except ConfigError:
        raise
    except ValueError as error:
        # Other modules' dataclasses name the field as "Class.field = value"; keep the dotted key.
        raise ConfigError(re.sub(r"^\w+\.(\w+) =", lambda match: f"{name}.{match.group(1)} =", str(error))) from None


def _build_snn(values: dict) -> SNNBranchConfig:
    hints = typing.get_type_hints(SNNConfig)
    extra = {"steps_per_frame": int, "rate_scale": float}
    allowed = [item.name for item in dataclasses.fields(SNNConfig)] + list(extra)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key snn.{unknown[0]}; allowed keys in [snn] are {allowed}")
    network = {}
    branch = {}
    for key, value in values.items():
        if key in extra:
            branch[key] = _check_type(f"snn.{key}", value, extra[key])
        elif key == "conv_channels":
            network[key] = _check_type("snn.conv_channels", value, tuple[int, ...])
        else:
            network[key] = _check_type(f"snn.{key}", value, hints[key])
    try:
        return SNNBranchConfig(network=SNNConfig.from_dict(network), **branch)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(re.sub(r"^SNNConfig\.(\w+) = (.*) is invalid; it must be",
                                 r"snn.\1 = \2 is invalid: it must be", str(error))) from None


def _load_yaml(text: str) -> dict:
    """Parse YAML with the safe loader, rejecting a key repeated within one mapping (as TOML does)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(key_node, deep=deep) for key_node, _ in node.value]
            repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
            if repeated:
                raise ConfigError(f"key {repeated[0]!r} appears more than once in one section; keep one")
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeyLoader) or {}


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and check a configuration file (``.toml``, ``.yaml`` or ``.yml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} not found; pass a .toml or .yaml file, for example "
                          "fusion/configs/small.toml")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".toml":
            values = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            values = _load_yaml(text)
        else:
            raise ConfigError(f"configuration file {path} has suffix {suffix!r}; use .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except ImportError:
        raise ConfigError(f"reading {path} needs PyYAML, which is not installed; use a .toml file") from None
    except ConfigError as error:
        if str(error).startswith(f"configuration file {path}"):
            raise
        raise ConfigError(f"{path}: {error}") from None
    except Exception as error:  # yaml.YAMLError and OSError
        raise ConfigError(f"{path} could not be read as {suffix[1:].upper()}: {error}") from None
    try:
        return ExperimentConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
