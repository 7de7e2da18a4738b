"""Tests of fusion.attention and fusion.models: shapes, modes and the SNN readout."""

from __future__ import annotations

import pytest
import torch

from fusion.attention import MetadataFusion
from fusion.config import ExperimentConfig
from fusion.models import SNNClassifier, X3DRegressor, build_branch
from neuro.model import PulmoSNN, predict_classes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(mode: str) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "snn": {"input_size": 16, "conv_channels": [4, 8], "hidden": 16},
        "x3d": {"size": 32, "frames": 4},
        "fusion": {"mode": mode, "embed_dim": 8, "heads": 2},
    })


@pytest.mark.parametrize("mode", ["attention", "concat", "none"])
def test_fusion_output_shape(mode):
    torch.manual_seed(0)
    fusion = MetadataFusion(12, 9, embed_dim=8, heads=2, mode=mode)
    fused = fusion(torch.randn(5, 12), torch.rand(5, 9))
    assert fused.shape == (5, 8)
    assert fusion.out_dim == 8
    assert (fused >= 0).all()


def test_fusion_uses_metadata_except_none():
    torch.manual_seed(0)
    video = torch.randn(3, 12)
    for mode, changes in (("attention", True), ("concat", True), ("none", False)):
        fusion = MetadataFusion(12, 9, embed_dim=8, heads=2, mode=mode).eval()
        first = fusion(video, torch.zeros(3, 9))
        second = fusion(video, torch.ones(3, 9))
        assert (not torch.allclose(first, second)) == changes, mode


def test_fusion_rejects_bad_shapes():
    fusion = MetadataFusion(12, 9, embed_dim=8, heads=2, mode="attention")
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        fusion(torch.randn(3, 11), torch.zeros(3, 9))
    with pytest.raises(ValueError, match="metadata"):
        fusion(torch.randn(3, 12), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="mode"):
        MetadataFusion(12, 9, embed_dim=8, heads=2, mode="sum")
    with pytest.raises(ValueError, match="multiple of heads"):
        MetadataFusion(12, 9, embed_dim=9, heads=2, mode="attention")


@pytest.mark.parametrize("mode", ["attention", "concat", "none"])
def test_snn_branch_shapes(mode):
    model = build_branch("snn", tiny_config(mode), 9)
    spikes = torch.bernoulli(torch.full((6, 3, 1, 16, 16), 0.5), generator=torch.Generator().manual_seed(0))
    output = model(spikes, torch.rand(3, 9))
    assert output.spikes.shape == (6, 3, 2)
    assert output.rates.shape == (3, 2)
    assert (output.logits is None) == (mode == "none")
    probabilities = model.probabilities(output)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))
    assert model.classes(output).shape == (3,)


def test_snn_single_modal_class_is_spike_argmax():
    model = build_branch("snn", tiny_config("none"), 9)
    spikes = torch.bernoulli(torch.full((8, 4, 1, 16, 16), 0.6), generator=torch.Generator().manual_seed(1))
    output = model(spikes, torch.rand(4, 9))
    assert torch.equal(model.classes(output), predict_classes(output.spikes))


def test_snn_branch_wraps_plain_pulmosnn():
    model = build_branch("snn", tiny_config("attention"), 9)
    assert type(model.snn) is PulmoSNN
    reference = PulmoSNN(model.snn.config)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.snn.state_dict()[name], tensor), name


@pytest.mark.parametrize("mode", ["attention", "concat", "none"])
def test_x3d_branch_shapes(mode):
    model = build_branch("x3d", tiny_config(mode), 9).eval()
    clips = torch.randn(2, 1, 4, 32, 32)
    assert model.features(clips).shape == (2, 2048)
    assert model(clips, torch.rand(2, 9)).shape == (2, 2)
    assert isinstance(model, X3DRegressor)


def test_branches_are_seeded():
    first = build_branch("snn", tiny_config("attention"), 9)
    second = build_branch("snn", tiny_config("attention"), 9)
    assert isinstance(first, SNNClassifier)
    for name, tensor in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name
    with pytest.raises(ValueError, match="branch"):
        build_branch("cnn", tiny_config("none"), 9)


def test_x3d_branch_loads_pretrained(tmp_path):
    from cnn.x3d import build_x3d_s

    torch.manual_seed(5)
    source = build_x3d_s(num_outputs=400, in_channels=1, dropout_rate=0.0)
    path = tmp_path / "x3d_s.pt"
    torch.save(source.state_dict(), path)
    config = ExperimentConfig.from_dict({"x3d": {"size": 32, "frames": 4, "pretrained": str(path)},
                                         "fusion": {"embed_dim": 8, "heads": 2}})
    model = build_branch("x3d", config, 9)
    loaded = model.backbone.state_dict()
    for name, tensor in source.state_dict().items():
        if not name.startswith("blocks.5.proj"):
            assert torch.equal(loaded[name], tensor), name
