"""The plain trainer: the study CNN on synthetic blobs, and a batch-norm network on real MNIST."""
import copy
import math

import pytest
import torch
from torch import nn

from functions.models import study_cnn as models
from functions.config import Config
from functions.data.tasks import Split
from functions.train.trainer import PairedBatches, fit, prefix_features

CFG = Config(num_channels=4, depth=2)
BN = dict(lr=1e-2, batch_size=32, seed=0)  # defaults for the batch-norm network


def _blobs(n, seed):
    """Two classes that differ in mean brightness: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return Split(x, y)


def _study_accuracy(state, split):
    """Accuracy of a fresh study CNN holding ``state``, evaluated here rather than by the trainer."""
    net = models.build(CFG, (1, 28, 28), 2, seed=0)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return (net(split.x).argmax(1) == split.y).sum().item() / len(split)


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


class _Spoiler:
    """Hooks for ``fit``: ``after_epoch`` keeps the state each epoch ended with (the state that
    was validated); ``forward`` runs the model, and on the first training step of epoch ``at``
    first applies ``spoil`` to it (a ruined or poisoned epoch)."""

    def __init__(self, model, at, spoil):
        self.model, self.at, self.spoil, self.states, self.validated = model, at, spoil, [], -1

    def after_epoch(self, epoch, val_acc):
        self.states.append(copy.deepcopy(self.model.state_dict()))
        self.validated = epoch

    def forward(self, x):
        if self.model.training and self.validated == self.at - 1:
            with torch.no_grad():
                self.spoil(self.model)
            self.validated = None
        return self.model(x)


def _flip(layer):
    """Flips and scales the layer's weights a thousandfold: the epoch that starts there ends far worse."""
    return lambda model: layer(model).weight.mul_(-1000)


def test_training_learns_and_restores_the_best_weights():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    train, val, test = _blobs(64, 0), _blobs(64, 1), _blobs(64, 2)
    spoiler = _Spoiler(model, 4, _flip(lambda m: m.fc))
    result = fit(model, train, val, test, lr=1e-2, max_epochs=5, patience=5, batch_size=16, seed=0,
                 forward=spoiler.forward, after_epoch=spoiler.after_epoch)
    states = spoiler.states
    assert result.status == "ok" and result.epochs == 5 and result.test_acc > 0.9 and len(states) == 5
    val_accs = [_study_accuracy(state, val) for state in states]  # at the end of each epoch
    best = val_accs.index(max(val_accs))
    assert val_accs[-1] < val_accs[best]  # the ruined last epoch is worse: the best weights are older
    assert _same_state(model.state_dict(), states[best])
    assert result.val_acc == val_accs[best]
    assert result.test_acc == _study_accuracy(states[best], test)


def test_nan_loss_is_reported_as_diverged():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    bad = _blobs(16, 0)
    bad.x[3] = float("nan")
    result = fit(model, bad, _blobs(16, 1), _blobs(16, 2), lr=1e-2, max_epochs=3, patience=2, batch_size=16, seed=0)
    assert result.status == "diverged" and result.epochs == 1


def test_cached_prefix_gives_the_same_training_as_the_full_network():
    source = models.build(CFG, (1, 28, 28), 2, seed=0)
    train, val, test = _blobs(48, 0), _blobs(32, 1), _blobs(32, 2)
    cached_splits = [prefix_features(source, s, 1) for s in (train, val, test)]
    plain, cached, custom = (models.cut(source, 1, CFG, 2, seed=4) for _ in range(3))
    a = fit(plain, train, val, test, lr=1e-2, max_epochs=3, patience=3, batch_size=16, seed=1)
    b = fit(cached, *cached_splits, lr=1e-2, max_epochs=3, patience=3, batch_size=16, seed=1, start=1)
    c = fit(custom, *cached_splits, lr=1e-2, max_epochs=3, patience=3, batch_size=16, seed=1,
            forward=lambda x: custom.forward_from(x, 1))
    assert (a.train_acc, a.val_acc, a.test_acc, a.epochs) == (b.train_acc, b.val_acc, b.test_acc, b.epochs)
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(tensor, cached.state_dict()[name], rtol=1e-4, atol=1e-5)
        assert torch.equal(cached.state_dict()[name], custom.state_dict()[name])  # start=1 is that forward
    assert (b.val_acc, b.test_acc) == (c.val_acc, c.test_acc)


def test_inputs_may_not_enter_before_the_last_trainable_block():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    with pytest.raises(ValueError, match="trainable"):
        fit(model, _blobs(8, 0), _blobs(8, 1), _blobs(8, 2), lr=1e-2, max_epochs=1, patience=1, batch_size=8,
            seed=0, start=1)


# ----------------------------------------------------------------------------- any network: batch norm, MNIST

@pytest.fixture(scope="module")
def digits(mnist_target):
    """A small slice of the MNIST 5-9 task (chance: 0.2), enough to learn in a few epochs."""
    return tuple(s.subset(torch.arange(n)) for s, n in
                 ((mnist_target.train, 384), (mnist_target.val, 256), (mnist_target.test, 256)))


def _bn_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 5))


def _eval_accuracy(state, split):
    """Accuracy of a fresh network holding ``state``, evaluated here rather than by the trainer."""
    net = _bn_net()
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        return (net(split.x).argmax(1) == split.y).sum().item() / len(split)


def test_a_batch_norm_network_learns_and_ends_with_its_best_epochs_state(digits):
    train, val, test = digits
    model = _bn_net()
    spoiler = _Spoiler(model, 4, _flip(lambda m: m[-1]))
    result = fit(model, train, val, test, max_epochs=5, patience=5, forward=spoiler.forward,
                 after_epoch=spoiler.after_epoch, **BN)
    assert result.status == "ok" and result.epochs == 5 and result.test_acc > 0.5
    val_accs = [_eval_accuracy(state, val) for state in spoiler.states]  # after each epoch
    best = val_accs.index(max(val_accs))
    assert best < 4  # the ruined last epoch is not kept
    # the model holds the best epoch's weights and batch-norm statistics
    final = model.state_dict()
    assert all(torch.equal(final[name], tensor) for name, tensor in spoiler.states[best].items())
    assert final["1.num_batches_tracked"] == (best + 1) * len(train) // BN["batch_size"]
    assert result.val_acc == max(val_accs) == _eval_accuracy(final, val)
    assert not model.training


def test_early_stopping_stops_after_patience_epochs_without_improvement(digits):
    train, val, test = digits
    model, states, patience = _bn_net(), [], 3
    result = fit(model, train, val, test, max_epochs=40, patience=patience,
                 after_epoch=lambda epoch, val_acc: states.append(copy.deepcopy(model.state_dict())),
                 **{**BN, "lr": 3e-2})
    assert result.status == "ok" and result.epochs < 40 and len(states) == result.epochs
    val_accs = [_eval_accuracy(state, val) for state in states]  # at the end of each epoch
    best = val_accs.index(max(val_accs))  # the first epoch that reached the best accuracy
    assert 0 < best < result.epochs - 1
    # no epoch after the best improved on it (a tie is no improvement), and the run ended once
    # `patience` of them had passed
    assert result.epochs == best + 1 + patience
    assert _same_state(model.state_dict(), states[best])
    assert result.val_acc == val_accs[best] and result.test_acc == _eval_accuracy(states[best], test)


def test_a_non_finite_loss_stops_training_and_keeps_the_best_weights_seen(digits):
    model = _bn_net()
    spoiler = _Spoiler(model, 2, lambda m: m[-1].bias.fill_(float("inf")))
    result = fit(model, *digits, max_epochs=5, patience=5, forward=spoiler.forward, after_epoch=spoiler.after_epoch,
                 **BN)
    assert result.status == "diverged" and result.epochs == 3 and len(spoiler.states) == 2
    assert torch.isfinite(model[-1].bias).all()
    val_accs = [_eval_accuracy(state, digits[1]) for state in spoiler.states]
    assert result.val_acc == max(val_accs)


def test_param_groups_take_their_own_learning_rates_and_weight_decay(digits):
    def run(head):
        model = _bn_net()
        body = [p for layer in model[:2] for p in layer.parameters()]
        head = {"params": list(model[-1].parameters()), **head}
        fit(model, *digits, max_epochs=2, patience=2, param_groups=[{"params": body, "lr": 0.0}, head], **BN)
        return model

    start, plain, decayed = _bn_net(), run({}), run({"weight_decay": 1.0})
    for i in (0, 1):  # the convolution and the batch-norm scale and shift stayed put
        assert all(torch.equal(a, b) for a, b in zip(plain[i].parameters(), start[i].parameters()))
    assert not torch.equal(plain[-1].weight, start[-1].weight)
    assert decayed[-1].weight.norm() < 0.5 * plain[-1].weight.norm()


def test_sgd_with_momentum_learns_and_its_momentum_counts(digits):
    def run(momentum):
        model = _bn_net()
        result = fit(model, *digits, max_epochs=3, patience=3, optimizer="sgd", momentum=momentum,
                     **{**BN, "lr": 0.01})
        return model, result

    (with_momentum, result), (without, _) = run(0.9), run(0.0)
    assert result.status == "ok" and result.test_acc > 0.5
    assert not torch.equal(with_momentum[-1].weight, without[-1].weight)
    with pytest.raises(ValueError, match="optimizer"):
        fit(_bn_net(), *digits, max_epochs=1, patience=1, optimizer="lbfgs", **BN)


def test_extra_loss_is_added_to_the_cross_entropy(digits):
    seen = []

    train = digits[0]

    def penalty(model, rows, inputs, logits, labels):  # rows: the batch's indices into the training split
        seen.append(len(inputs) == len(logits) == len(labels) and torch.equal(train.x[rows], inputs))
        return 10 * model[-1].weight.pow(2).sum()

    plain, penalised = _bn_net(), _bn_net()
    fit(plain, *digits, max_epochs=2, patience=2, **BN)
    fit(penalised, *digits, max_epochs=2, patience=2, extra_loss=penalty, **BN)
    assert seen and all(seen)
    assert penalised[-1].weight.norm() < 0.5 * plain[-1].weight.norm()


def test_same_seed_same_weights_on_cpu_and_another_seed_others(digits):
    def run(seed):
        model = _bn_net()
        fit(model, *digits, max_epochs=2, patience=2, **{**BN, "seed": seed})
        return model.state_dict()

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(first[name], again[name]) for name in first)  # batch-norm statistics included
    assert not torch.equal(first["5.weight"], other["5.weight"])


def test_float64_training_converts_the_network_and_the_inputs(digits):
    model = _bn_net()
    result = fit(model, *digits, max_epochs=2, patience=2, dtype=torch.float64, **BN)
    assert result.status == "ok" and result.test_acc > 0.5
    assert {t.dtype for t in model.state_dict().values() if t.is_floating_point()} == {torch.float64}


def test_one_sgd_epoch_is_torch_sgd_over_the_seeded_batch_order():
    """fit with SGD and its default momentum (0.9) against a hand-written loop: the same batches in
    the order torch.randperm draws from the seed, the same steps."""
    train, val = _blobs(40, 0), _blobs(10, 1)
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    reference = copy.deepcopy(model)
    fit(model, train, val, val, lr=0.05, max_epochs=1, patience=1, batch_size=16, seed=3, optimizer="sgd")
    optim = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    for i in range(0, 40, 16):
        index = order[i:i + 16]
        optim.zero_grad()
        torch.nn.functional.cross_entropy(reference(train.x[index]), train.y[index]).backward()
        optim.step()
    for (name, got), want in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_forward_and_start_together_are_refused():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    with pytest.raises(ValueError, match="^give either forward or start, not both$"):
        fit(model, _blobs(4, 0), _blobs(4, 1), _blobs(4, 1), lr=0.1, max_epochs=1, patience=1, batch_size=4,
            seed=0, start=1, forward=model)


def test_a_run_result_is_recorded_field_by_field():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    result = fit(model, _blobs(8, 0), _blobs(4, 1), _blobs(4, 2), lr=0.01, max_epochs=1, patience=1, batch_size=8,
                 seed=0)
    record = result.record()
    assert list(record) == ["train_acc", "val_acc", "test_acc", "epochs", "seconds", "n_train", "status"]
    assert record["n_train"] == 8 and record["epochs"] == 1 and record["status"] == "ok"
    assert record["test_acc"] == result.test_acc


def test_without_validation_training_lasts_its_epochs_and_keeps_its_last_weights(digits):
    model, states = _bn_net(), []

    def keep(loss):
        states.append(copy.deepcopy(model.state_dict()))
        return True

    result = fit(model, digits[0], None, None, max_epochs=3, patience=1, after_step=keep, **BN)
    assert result.status == "ok" and result.epochs == 3 and len(states) == 3 * 384 // BN["batch_size"]
    assert _same_state(model.state_dict(), states[-1]) and not model.training
    assert all(math.isnan(a) for a in (result.train_acc, result.val_acc, result.test_acc))


def test_after_step_ends_training_where_it_returns_false(digits):
    losses = []
    result = fit(_bn_net(), *digits, max_epochs=5, patience=5, after_step=lambda loss: losses.append(loss) or
                 len(losses) < 7, **BN)
    assert len(losses) == 7 and result.epochs == 1 and result.status == "ok"


def test_paired_batches_put_as_many_unlabelled_images_after_each_labelled_batch():
    train = Split(torch.arange(10.0).view(10, 1, 1, 1), torch.zeros(10, dtype=torch.long))
    unlabelled = 100 + torch.arange(7.0).view(7, 1, 1, 1)
    batches = PairedBatches(unlabelled, len(train), batch_size=3, min_steps=5)
    assert batches.batch_size == 3 and batches.steps_per_epoch == 6  # 2 whole batches a pass, 3 passes
    epochs = batches(train, torch.Generator().manual_seed(0))
    steps = [list(next(epochs)) for _ in range(2)]
    for epoch in steps:
        assert len(epoch) == 6
        for rows, x in epoch:
            assert len(x) == 6 and torch.equal(x[:3].flatten(), rows.float()) and (x[3:] >= 100).all()
        passes = [torch.cat([x[3:] for _, x in epoch[i:i + 2]]).flatten().tolist() for i in (0, 2, 4)]
        assert all(len(set(images)) == 6 for images in passes)  # a pass over the unlabelled images
    rows = torch.cat([r for epoch in steps for r, _ in epoch]).tolist()
    assert all(len(set(rows[9 * k:9 * k + 9])) == 9 for k in range(4))  # labelled passes of 3 whole batches


def test_a_pass_never_ends_on_one_row_when_batch_norm_trains():
    from functions.train.trainer import ShuffledBatches
    train = Split(torch.arange(9.0).reshape(9, 1), torch.zeros(9, dtype=torch.long))
    sizes = lambda batches: [len(rows) for rows, _ in next(batches(train, torch.Generator().manual_seed(0)))]
    assert sizes(ShuffledBatches(4)) == [4, 4, 1]
    assert sizes(ShuffledBatches(4, min_batch=2)) == [4, 5]  # the row alone joins the batch before it
    epoch = next(ShuffledBatches(4, min_batch=2)(train, torch.Generator().manual_seed(0)))
    assert sorted(int(r) for rows, _ in epoch for r in rows) == list(range(9))  # every row, once
    assert sizes(ShuffledBatches(16, min_batch=2)) == [9]
