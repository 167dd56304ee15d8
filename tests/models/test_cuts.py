"""The cut point on a pretrained backbone: what F, FR and FT keep, draw anew and remove."""
import pytest
import torch
from torch import nn

from functions.core.errors import DataError
from functions.models.backbones import state_sha256
from functions.models.cuts import check_cut, cut_backbone, random_backbone, stage_at
from functions.models.registry import create_backbone


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0", input_size=32)


def hashes(backbone):
    return {name: state_sha256(stage) for name, stage in backbone.stages.items()}


def test_f_keeps_every_pretrained_weight_and_fr_draws_the_stages_after_the_cut_anew(lite0):
    pretrained = hashes(lite0)
    assert hashes(cut_backbone(lite0, 3, "F", seed=0)) == pretrained
    fr = hashes(cut_backbone(lite0, 3, "FR", seed=0))
    names = lite0.layer_names
    assert all(fr[n] == pretrained[n] for n in names[:3])
    assert all(fr[n] != pretrained[n] for n in names[3:])
    assert fr == hashes(cut_backbone(lite0, 3, "FR", seed=0))  # the new weights follow the seed
    other = hashes(cut_backbone(lite0, 3, "FR", seed=1))
    assert all(other[n] != fr[n] for n in names[3:])
    assert hashes(lite0) == pretrained  # the pretrained backbone itself is never changed


def test_fr_resets_batch_norm_statistics_and_the_baseline_draws_every_stage(lite0):
    fr = cut_backbone(lite0, 8, "FR", seed=0)
    norm = [m for m in fr.stages["head"].modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    pretrained, baseline = hashes(lite0), hashes(random_backbone(lite0, seed=0))
    assert all(baseline[n] != pretrained[n] for n in lite0.layer_names)


def test_ft_removes_the_stages_after_the_cut_and_pools_stage_k(lite0):
    ft = cut_backbone(lite0, 4, "FT", seed=0)
    assert ft.layer_names == lite0.layer_names[:4]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ft(x), lite0.pooled(x, [lite0.layer_names[3]])[0])
    assert stage_at(lite0, 4) == "block3" and stage_at(lite0, 0) == "input"


@pytest.mark.parametrize("cut_point, mode, message", [
    (0, "FT", r"cut point 0 is outside 1\.\.9 for mode FT"),
    (10, "F", r"cut point 10 is outside 0\.\.9"),
    (True, "F", r"cut point True is outside"),
    (2, "lora", r"unknown cut mode 'lora'"),
])
def test_impossible_cuts_are_refused_in_one_line(lite0, cut_point, mode, message):
    with pytest.raises(DataError, match=message):
        check_cut(lite0, cut_point, mode)
