"""Tests of fusion.config: shipped files, round trip, hash and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion.config import ConfigError, ExperimentConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "fusion" / "configs"


@pytest.mark.parametrize("name", ["default", "small", "tiny"])
def test_shipped_config_loads(name):
    config = load_config(CONFIGS / f"{name}.toml")
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert config.hash() == ExperimentConfig.from_dict(config.to_dict()).hash()


def test_small_config_values():
    config = load_config(CONFIGS / "small.toml")
    assert config.data.folds == 5
    assert config.training.branches == ("snn", "x3d")
    assert config.snn.network.input_size == 32
    assert config.x3d.size == 32


def test_yaml_equals_toml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  epochs: 3\n  lr: 0.01\nfusion:\n  mode: concat\nsnn:\n  conv_channels: [4, 8]\n")
    config = load_config(path)
    assert config.training.epochs == 3
    assert config.training.lr == 0.01
    assert config.fusion.mode == "concat"
    assert config.snn.network.conv_channels == (4, 8)


def test_hash_changes_with_value():
    base = ExperimentConfig()
    changed = ExperimentConfig.from_dict({"training": {"lr": 0.5}})
    assert base.hash() != changed.hash()
    assert len(base.hash()) == 64


@pytest.mark.parametrize("text, key", [
    ("[training]\nlr = -1\n", "training.lr = -1.0 is invalid"),
    ("[training]\nlearning_rate = 0.1\n", "training.learning_rate"),
    ("[training]\nepochs = \"ten\"\n", "training.epochs = 'ten' is invalid: it must be an integer"),
    ("[training]\nbalance_classes = 1\n", "training.balance_classes"),
    ("[training]\nbranches = [\"snn\", \"cnn\"]\n", "training.branches"),
    ("[data]\nmodality = \"xray\"\n", "data.modality"),
    ("[data]\nlabel = \"gold\"\n", "data.label"),
    ("[fusion]\nembed_dim = 10\nheads = 4\n", "fusion.heads"),
    ("[snn]\ninput_size = 30\n", "snn.input_size = 30 is invalid"),
    ("[snn]\nsize = 30\n", "snn.size"),
    ("[snn]\nsteps_per_frame = 0\n", "snn.steps_per_frame"),
    ("[x3d]\ndropout = 1.5\n", "x3d.dropout"),
    ("[augment]\nflip_probability = 2.0\n", "augment.flip_probability"),
    ("[augment]\nrotation = 3\n", "augment.rotation"),
    ("[optimizer]\nlr = 1\n", "'optimizer'"),
    ("training = 3\n", "training = 3 is invalid"),
])
def test_config_error_names_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key in str(error.value)
    assert str(path) in str(error.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[training\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    other = tmp_path / "config.ini"
    other.write_text("[training]\n")
    with pytest.raises(ConfigError, match="suffix"):
        load_config(other)


def test_label_rule_lln_accepted():
    config = ExperimentConfig.from_dict({"data": {"label": "lln", "modality": "rgb"}})
    assert config.data.label == "lln"
    assert config.data.modality == "rgb"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_number_rejected(tmp_path, value):
    path = tmp_path / "bad.toml"
    path.write_text(f"[training]\nlr = {value}\n")
    with pytest.raises(ConfigError, match=r"training\.lr = .* is invalid: it must be a finite number"):
        load_config(path)


def test_yaml_repeated_key_rejected(tmp_path):
    path = tmp_path / "repeated.yaml"
    path.write_text("data:\n  modality: thermal\n  modality: rgb\n")
    with pytest.raises(ConfigError, match=r"repeated\.yaml: key 'modality' appears more than once"):
        load_config(path)
