"""The fine-tuning regularisers against their papers' formulas on hand-built batches, and as modes
of the study that choose their weight on validation."""
import numpy as np
import pytest
import torch

from functions.config import REGULARISER_WEIGHTS, Config
from functions.core.errors import DataError
from functions.data.tasks import Split
from functions.models.registry import STUDY, create_backbone
from functions.models.study_cnn import build
from functions.train.regularisers import (Regulariser, bss_penalty, delta_channel_weights, delta_penalty,
                                          l2sp_penalty)
from functions.train.strategies import fit_strategy, strategy_finetuner


def test_l2sp_is_half_alpha_times_the_squared_distance_to_the_start_plus_half_beta_times_the_head():
    w, w0 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])  # distance^2 = 0 + 4 + 4
    head = torch.tensor([[3.0, 4.0]])  # norm^2 = 25
    assert l2sp_penalty([w], [w0], [head], alpha=0.1, beta=0.01).item() == pytest.approx(0.05 * 8 + 0.005 * 25)
    assert l2sp_penalty([w0], [w0], [], alpha=5.0).item() == 0.0  # at the pretrained point: nothing
    with pytest.raises(DataError, match="pairs each reused weight"):
        l2sp_penalty([w], [], [], alpha=0.1)


def test_delta_weighs_each_channels_squared_map_distance_and_averages_over_the_batch():
    maps = torch.zeros(2, 3, 2, 2)
    reference = torch.zeros(2, 3, 2, 2)
    maps[0, 0] = 1.0  # image 0, channel 0: 4 positions off by 1 -> 4
    maps[1, 2, 0, 0] = 3.0  # image 1, channel 2: one position off by 3 -> 9
    weights = torch.tensor([0.5, 0.3, 0.2])
    assert delta_penalty(maps, reference, weights).item() == pytest.approx((0.5 * 4 + 0.2 * 9) / 2)
    with pytest.raises(DataError, match="one weight per channel"):
        delta_penalty(maps, reference, torch.ones(2))


def test_delta_attention_puts_most_weight_on_the_channel_the_classes_need():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(80) % 2
    maps = torch.randn(80, 3, 2, 2, generator=generator)
    maps[:, 1] += 3.0 * (2 * labels - 1).float()[:, None, None]  # channel 1 separates the classes
    weights = delta_channel_weights(maps, labels, "avg")
    assert weights.sum().item() == pytest.approx(1.0) and weights.argmax().item() == 1
    assert weights[1] > weights[0] and weights[1] > weights[2]


def test_bss_is_the_sum_of_the_squares_of_the_smallest_singular_values():
    features = torch.diag(torch.tensor([5.0, 3.0, 0.5]))  # singular values 5, 3, 0.5
    assert bss_penalty(features).item() == pytest.approx(0.25)
    assert bss_penalty(features, 2).item() == pytest.approx(9.25)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, generator=generator, dtype=torch.float64)
    assert bss_penalty(x).item() == pytest.approx(np.linalg.svd(x.numpy(), compute_uv=False)[-1] ** 2)
    with pytest.raises(DataError, match="singular values"):
        bss_penalty(features, 4)


def small_task(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 1, 12, 12, generator=generator)
    y = torch.arange(60) % 3
    x[:, :, :4] += y.float()[:, None, None, None]  # the classes differ in the top rows
    return Split(x[:36], y[:36]), Split(x[36:48], y[36:48]), Split(x[48:], y[48:])


def test_a_regulariser_penalises_only_what_moved_from_the_pretrained_network():
    source = build(Config(num_channels=4, depth=3), (1, 12, 12), 5, seed=0)
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    train, _, _ = small_task()
    tuner = strategy_finetuner(backbone, "l2sp", 1, 3, seed=0, lr=1e-3, pooling="flatten")
    staged = Split(tuner.net.backbone.run(tuner.net.backbone.adapt(train.x), 0, 1).detach(), train.y)
    l2sp = Regulariser("l2sp", tuner.net, 0.1, 1, staged)
    delta = Regulariser("delta", tuner.net, 0.1, 1, staged)
    h = staged.x[:8]
    logits = l2sp.logits(h)
    head = 0.01 / 2 * sum(p.square().sum() for p in tuner.net.head.parameters())
    assert l2sp.loss(None, None, h, logits, None).item() == pytest.approx(head.item(), rel=1e-6)  # no move yet
    delta.logits(h)
    assert delta.loss(None, None, h, logits, None).item() == pytest.approx(head.item(), rel=1e-6)
    with torch.no_grad():
        for p in tuner.net.backbone.stages[tuner.layer_names[2]].parameters():
            p.add_(0.5)
    moved = 0.1 / 2 * sum(p.numel() * 0.25 for p in tuner.net.backbone.stages[tuner.layer_names[2]].parameters())
    assert l2sp.loss(None, None, h, l2sp.logits(h), None).item() == pytest.approx(head.item() + moved, rel=1e-5)
    assert delta.loss(None, None, h, delta.logits(h), None).item() > head.item()  # the maps moved
    with pytest.raises(DataError, match="unknown regulariser"):
        Regulariser("dropout", tuner.net, 0.1, 1, train)


@pytest.mark.parametrize("method", list(REGULARISER_WEIGHTS))
def test_a_regulariser_keeps_the_weight_best_on_validation_and_that_weight_alone_trains_the_same(method):
    source = build(Config(num_channels=4, depth=3), (1, 12, 12), 5, seed=0)
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    train, val, test = small_task()
    build_net = lambda: strategy_finetuner(backbone, method, 1, 3, seed=2, lr=3e-3, pooling="flatten")
    common = dict(epochs=3, stage_epochs=1, patience=2, batch_size=8, min_steps_per_epoch=2)
    weights = REGULARISER_WEIGHTS[method]
    _, chosen = fit_strategy(build_net, method, 1, train, val, test, 0, 2, weights=weights, **common)
    candidates = {w: chosen.details[f"val_acc_weight{w:g}"] for w in weights}
    assert chosen.details["chosen_weight"] == max(candidates, key=candidates.get)
    _, alone = fit_strategy(build_net, method, 1, train, val, test, 0, 2, weights=(chosen.details["chosen_weight"],),
                            **common)
    assert alone.test_acc == chosen.test_acc and alone.val_acc == chosen.val_acc


def test_the_regularisers_are_modes_whose_weights_are_typed_and_recorded():
    cfg = Config().with_mode("l2sp")
    assert cfg.mode == "l2sp" and cfg.regularisation_candidates == REGULARISER_WEIGHTS["l2sp"]
    assert cfg.params()["regularisation_weights"] == list(REGULARISER_WEIGHTS["l2sp"])
    assert "regularisation_weights" not in Config().with_mode("F").params()
    tuned = Config().with_mode("bss-tuned")
    assert tuned.mode == "bss-tuned" and len(tuned.learning_rates) == 3
    assert tuned.as_chosen({"chosen_weight": 0.01, "chosen_lr": 0.001}).regularisation_candidates == (0.01,)
    with pytest.raises(DataError, match="regularisation_weight"):
        Config().with_mode("delta").replace(regularisation_weight=-1.0)
