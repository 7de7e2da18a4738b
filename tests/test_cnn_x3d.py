"""Tests of the X3D-S builder, the torchvision-free import and checkpoint loading."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn import CheckpointError, X3D_S_CONFIG, build_x3d_s, count_parameters, import_pytorchvideo, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCHVISION_MISSING = importlib.util.find_spec("torchvision") is None
# pytorchvideo 0.1.5's X3D-S with its 400-class Kinetics head, counted on hub.x3d_s(pretrained=False).
KINETICS_X3D_S_PARAMETERS = 3_794_274


def _mark_payload_ran(marker: str) -> None:
    Path(marker).write_text("the pickle payload ran")


class _Payload:
    """An object whose unpickling would call ``_mark_payload_ran``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_mark_payload_ran, (self.marker,))


@pytest.fixture(scope="module")
def kinetics_x3d_s():
    hub = import_pytorchvideo("pytorchvideo.models.hub.x3d")
    return hub.x3d_s(pretrained=False)


@pytest.fixture()
def thermal_model():
    torch.manual_seed(0)
    return build_x3d_s().eval()


def test_kinetics_x3d_s_parameter_count(kinetics_x3d_s):
    assert count_parameters(kinetics_x3d_s) == KINETICS_X3D_S_PARAMETERS


def test_builder_reproduces_kinetics_x3d_s(kinetics_x3d_s):
    rgb = build_x3d_s(num_outputs=400, in_channels=3)
    assert count_parameters(rgb) == KINETICS_X3D_S_PARAMETERS
    expected = {key: tuple(value.shape) for key, value in kinetics_x3d_s.state_dict().items()}
    actual = {key: tuple(value.shape) for key, value in rgb.state_dict().items()}
    assert actual == expected


def test_thermal_model_parameter_count(thermal_model):
    head_saved = (400 - 2) * (2048 + 1)
    stem_saved = 24 * (3 - 1) * 3 * 3
    assert count_parameters(thermal_model) == KINETICS_X3D_S_PARAMETERS - head_saved - stem_saved
    assert count_parameters(thermal_model) == 2_978_340


@pytest.mark.slow
def test_forward_on_thermal_clip(thermal_model):
    torch.set_num_threads(2)
    clip = torch.randn(1, 1, 30, 224, 224)
    with torch.no_grad():
        output = thermal_model(clip)
    assert output.shape == (1, 2)
    assert torch.isfinite(output).all()


@pytest.mark.slow
def test_forward_other_sizes(thermal_model):
    with torch.no_grad():
        assert thermal_model(torch.randn(2, 1, 8, 64, 64)).shape == (2, 2)
        assert thermal_model(torch.randn(1, 1, 1, 32, 48)).shape == (1, 2)


@pytest.mark.slow
def test_adaptive_pool_matches_pytorchvideo(thermal_model):
    x3d = import_pytorchvideo("pytorchvideo.models.x3d")
    fixed_pool = x3d.create_x3d(input_channel=1, model_num_class=2, head_activation=None, **X3D_S_CONFIG)
    fixed_pool.load_state_dict(thermal_model.state_dict())
    fixed_pool.eval()
    clip = torch.randn(1, 1, 13, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(thermal_model(clip), fixed_pool(clip))


@pytest.mark.skipif(not TORCHVISION_MISSING, reason="the stub is used only without torchvision")
def test_torchvision_stub_removed_in_fresh_process():
    code = (
        "import sys; from cnn import build_x3d_s; build_x3d_s(); "
        "import pytorchvideo.models.head as head; "
        "print(sorted(name for name in sys.modules if name.startswith('torchvision')))\n"
        "try:\n    head.RoIAlign((7, 7), 1.0, 0)\nexcept ImportError as error:\n    print('ImportError', error)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1].startswith("ImportError torchvision.ops.RoIAlign is not available")


@pytest.mark.skipif(not TORCHVISION_MISSING, reason="the stub is used only without torchvision")
def test_torchvision_stub_removed_in_this_process(thermal_model):
    import_pytorchvideo("pytorchvideo.models.hub.x3d")
    assert "torchvision" not in sys.modules
    assert "torchvision.ops" not in sys.modules


def test_import_outside_models_rejected():
    with pytest.raises(ValueError, match="module_name"):
        import_pytorchvideo("pytorchvideo.transforms")


@pytest.mark.parametrize(
    "arguments,name",
    [({"num_outputs": 0}, "num_outputs"), ({"in_channels": 2}, "in_channels"), ({"dropout_rate": 1.0}, "dropout_rate")],
)
def test_bad_builder_arguments_rejected(arguments, name):
    with pytest.raises(ValueError, match=name):
        build_x3d_s(**arguments)


def test_checkpoint_round_trip(thermal_model, tmp_path):
    path = tmp_path / "thermal.pt"
    torch.save(thermal_model.state_dict(), path)
    torch.manual_seed(1)
    restored = build_x3d_s().eval()
    clip = torch.randn(1, 1, 8, 64, 64)
    with torch.no_grad():
        before = restored(clip)
    report = load_checkpoint(restored, path)
    with torch.no_grad():
        after = restored(clip)
        expected = thermal_model(clip)
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)
    assert report.skipped_head_keys == ()
    assert report.adapted_keys == ()


def test_training_checkpoint_layout_accepted(thermal_model, tmp_path):
    path = tmp_path / "training.pyth"
    torch.save({"model_state": thermal_model.state_dict(), "epoch": 3, "cfg": "TRAIN: {}"}, path)
    restored = build_x3d_s().eval()
    load_checkpoint(restored, path)
    for key, value in thermal_model.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key


def test_kinetics_checkpoint_skips_head_and_sums_stem(kinetics_x3d_s, tmp_path, caplog):
    kinetics_path = tmp_path / "x3d_s_kinetics.pt"
    torch.save(kinetics_x3d_s.state_dict(), kinetics_path)
    rgb = build_x3d_s(in_channels=3).eval()
    with caplog.at_level(logging.WARNING, logger="cnn.x3d"):
        report = load_checkpoint(rgb, kinetics_path)
    assert report.skipped_head_keys == ("blocks.5.proj.bias", "blocks.5.proj.weight")
    assert "blocks.5.proj.weight" in caplog.text
    assert kinetics_path.name in caplog.text

    # A 1-channel model loaded from the 3-channel weights equals the RGB model on a grey clip.
    rgb_path = tmp_path / "x3d_s_rgb_regression.pt"
    torch.save(rgb.state_dict(), rgb_path)
    grey = build_x3d_s(in_channels=1).eval()
    report = load_checkpoint(grey, rgb_path)
    assert report.adapted_keys == ("blocks.0.conv.conv_t.weight",)
    clip = torch.rand(1, 1, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(clip), rgb(clip.repeat(1, 3, 1, 1, 1)), rtol=1e-4, atol=1e-5)


def _assert_rejected(model, path: Path, fragment: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as excinfo:
        load_checkpoint(model, path)
    message = str(excinfo.value)
    assert path.name in message
    assert fragment in message
    return excinfo.value


def test_missing_file_rejected(thermal_model, tmp_path):
    _assert_rejected(thermal_model, tmp_path / "absent.pt", "not found")


def test_directory_rejected(thermal_model, tmp_path):
    folder = tmp_path / "weights.pt"
    folder.mkdir()
    _assert_rejected(thermal_model, folder, "not a regular file")


@pytest.mark.parametrize(
    "name,content",
    [
        ("random.pt", os.urandom(512)),
        ("notes.pt", b"these are not weights\n"),
        ("empty.pt", b""),
        ("one_byte.pt", b"\x80"),
    ],
)
def test_corrupt_file_rejected(thermal_model, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    _assert_rejected(thermal_model, path, "corrupt")


def test_truncated_checkpoint_rejected(thermal_model, tmp_path):
    path = tmp_path / "truncated.pt"
    torch.save(thermal_model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_rejected(thermal_model, path, "corrupt")


def test_non_state_dict_rejected(thermal_model, tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2), torch.ones(2)], path)
    _assert_rejected(thermal_model, path, "not a state dict")
    path = tmp_path / "mixed.pt"
    torch.save({"weight": torch.zeros(2), "note": "text"}, path)
    _assert_rejected(thermal_model, path, "not tensors")


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_object_rejected_without_running(thermal_model, tmp_path, writer):
    marker = tmp_path / "payload_ran.txt"
    path = tmp_path / "object.pt"
    content = {"blocks.0.norm.weight": torch.zeros(24), "extra": _Payload(marker)}
    if writer == "torch.save":
        torch.save(content, path)
    else:
        with path.open("wb") as stream:
            pickle.dump(content, stream, protocol=2)
    error = _assert_rejected(thermal_model, path, "")
    assert not marker.exists()
    if writer == "torch.save":
        assert "weights_only=True" in str(error)


def test_backbone_shape_mismatch_rejected(thermal_model, tmp_path):
    state = thermal_model.state_dict()
    state["blocks.2.res_blocks.0.branch2.conv_a.weight"] = torch.zeros(3, 3, 1, 1, 1)
    path = tmp_path / "wrong_shape.pt"
    torch.save(state, path)
    error = _assert_rejected(thermal_model, path, "blocks.2.res_blocks.0.branch2.conv_a.weight")
    assert "shape" in str(error)


def test_wider_model_rejected(tmp_path):
    x3d = import_pytorchvideo("pytorchvideo.models.x3d")
    config = {**X3D_S_CONFIG, "width_factor": 2.5}
    wider = x3d.create_x3d(input_channel=1, model_num_class=2, head_activation=None, **config)
    path = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), path)
    _assert_rejected(build_x3d_s(), path, "backbone")


def test_backbone_key_missing_rejected(thermal_model, tmp_path):
    state = thermal_model.state_dict()
    del state["blocks.1.res_blocks.0.branch1_conv.weight"]
    state["blocks.1.extra.weight"] = torch.zeros(1)
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    error = _assert_rejected(thermal_model, path, "missing keys: blocks.1.res_blocks.0.branch1_conv.weight")
    assert "unexpected keys: blocks.1.extra.weight" in str(error)


def test_missing_batch_norm_counters_accepted(thermal_model, tmp_path):
    state = {key: value for key, value in thermal_model.state_dict().items() if "num_batches_tracked" not in key}
    path = tmp_path / "no_counters.pt"
    torch.save(state, path)
    report = load_checkpoint(build_x3d_s(), path)
    assert len(report.loaded_keys) == len(state)
