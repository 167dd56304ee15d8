import pytest
import torch

from functions.models import study_cnn as models
from functions.config import Config
from functions.core.errors import DataError

CFG = Config(num_channels=8, depth=4)
SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def pretrained():
    return models.build(CFG, SHAPE, 5, seed=0)


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("k", range(5))
def test_freeze_reinit_keeps_and_freezes_the_prefix_and_reinitialises_the_rest(pretrained, k):
    model = models.cut(pretrained, k, CFG.with_mode("FR"), num_classes=3, seed=1)
    for i, block in enumerate(model.blocks):
        same = _equal(block, pretrained.blocks[i])
        trainable = all(p.requires_grad for p in block.parameters())
        assert (same, trainable) == ((True, False) if i < k else (False, True)), i
    assert model.fc.out_features == 3 and all(p.requires_grad for p in model.fc.parameters())


@pytest.mark.parametrize("k", range(5))
def test_freeze_keeps_every_block_and_fine_tunes_after_the_cut(pretrained, k):
    model = models.cut(pretrained, k, CFG.with_mode("F"), num_classes=3, seed=1)
    for i, block in enumerate(model.blocks):
        assert _equal(block, pretrained.blocks[i])
        assert all(p.requires_grad == (i >= k) for p in block.parameters())


@pytest.mark.parametrize("k, flat", [(0, 28 * 28), (1, 8 * 28 * 28), (2, 8 * 14 * 14), (3, 8 * 14 * 14), (4, 8 * 7 * 7)])
def test_truncate_removes_blocks_after_the_cut(pretrained, k, flat):
    model = models.cut(pretrained, k, CFG.with_mode("FT"), num_classes=3, seed=1)
    assert len(model.blocks) == k and model.fc.in_features == flat
    assert model(torch.randn(2, *SHAPE)).shape == (2, 3)
    assert all(_equal(model.blocks[i], pretrained.blocks[i]) for i in range(k))


def test_two_linear_layers_and_reinit_both_dense():
    cfg = CFG.replace(two_linear_layers=True, hidden_dim_lin=16)
    source = models.build(cfg, SHAPE, 5, seed=0)
    kept = models.cut(source, 2, cfg.with_mode("FR").replace(reinit_both_dense=False), 3, seed=1)
    fresh = models.cut(source, 2, cfg.with_mode("FR"), 3, seed=1)
    assert _equal(kept.hidden, source.hidden) and not _equal(fresh.hidden, source.hidden)
    assert kept(torch.randn(2, *SHAPE)).shape == (2, 3)


def test_pooling_stride_and_interval_set_the_feature_size():
    model = models.build(CFG.replace(pooling_every_n_layers=1, pooling_stride=1), SHAPE, 5, seed=0)
    assert model.features(torch.zeros(1, *SHAPE)).shape == (1, 8, 24, 24)  # four 2x2 pools of stride 1


def test_baseline_is_cut_zero_with_reinit(pretrained):
    assert _equal(models.cut(pretrained, 0, CFG.with_mode("FR"), 5, seed=7), models.build(CFG, SHAPE, 5, seed=7))


@pytest.mark.parametrize("k", [-1, 5, 2.5])
def test_cut_point_out_of_range(pretrained, k):
    with pytest.raises(DataError, match=r"outside 0..4"):
        models.cut(pretrained, k, CFG, 5, seed=0)


def test_upstream_activation_names_are_understood():
    assert isinstance(models.activation("<class 'torch.nn.modules.activation.ReLU'>"), torch.nn.ReLU)
    with pytest.raises(DataError, match="unknown activation"):
        models.activation("Swishy")


@pytest.mark.parametrize("mode", [dict(freeze=True, reinit=True), dict(freeze=True, reinit=False),
                                  dict(freeze=True, reinit=False, truncate=True)])
def test_cut_networks_use_the_channels_last_layout(pretrained, mode):
    """The layout the engine and the data splits use on the CPU; a cut network keeps it."""
    model = models.cut(pretrained, 2, CFG.replace(**mode), num_classes=3, seed=1)
    assert all(block.conv.weight.is_contiguous(memory_format=torch.channels_last) for block in model.blocks)
