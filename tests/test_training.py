import torch

from functions.models import study_cnn as models
from functions.config import Config
from functions.data.tasks import Split
from functions.train.fit import accuracy, fit, prefix_features

CFG = Config(num_channels=4, depth=2)


def _blobs(n, seed):
    """Two classes that differ in mean brightness: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
    return Split(x, y)


def test_training_learns_and_restores_the_best_weights():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    result = fit(model, _blobs(64, 0), _blobs(64, 1), _blobs(64, 2), lr=1e-2, max_epochs=5, patience=2,
                 batch_size=16, seed=0)
    assert result.test_acc > 0.9 and result.status == "ok"
    assert result.val_acc == accuracy(model, _blobs(64, 1))  # the model holds the weights that were reported


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    # validation labels are noise: accuracy cannot keep improving, so training stops early
    val = _blobs(64, 1)
    val = Split(val.x, val.y[torch.randperm(64, generator=torch.Generator().manual_seed(0))])
    result = fit(model, _blobs(64, 0), val, _blobs(64, 2), lr=1e-2, max_epochs=40, patience=2, batch_size=16, seed=0)
    assert result.epochs < 40


def test_same_seed_same_weights_on_cpu():
    runs = []
    for _ in range(2):
        model = models.build(CFG, (1, 28, 28), 2, seed=3)
        fit(model, _blobs(32, 0), _blobs(32, 1), _blobs(32, 2), lr=1e-2, max_epochs=2, patience=2, batch_size=8, seed=5)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_nan_loss_is_reported_as_diverged():
    model = models.build(CFG, (1, 28, 28), 2, seed=0)
    bad = _blobs(16, 0)
    bad.x[3] = float("nan")
    result = fit(model, bad, _blobs(16, 1), _blobs(16, 2), lr=1e-2, max_epochs=3, patience=2, batch_size=16, seed=0)
    assert result.status == "diverged" and result.epochs == 1


def test_cached_prefix_gives_the_same_training_as_the_full_network():
    source = models.build(CFG, (1, 28, 28), 2, seed=0)
    train, val, test = _blobs(48, 0), _blobs(32, 1), _blobs(32, 2)
    plain = models.cut(source, 1, CFG, 2, seed=4)
    cached = models.cut(source, 1, CFG, 2, seed=4)
    a = fit(plain, train, val, test, lr=1e-2, max_epochs=3, patience=3, batch_size=16, seed=1)
    b = fit(cached, *(prefix_features(source, s, 1) for s in (train, val, test)), lr=1e-2, max_epochs=3,
            patience=3, batch_size=16, seed=1, start=1)
    assert (a.train_acc, a.val_acc, a.test_acc, a.epochs) == (b.train_acc, b.val_acc, b.test_acc, b.epochs)
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(tensor, cached.state_dict()[name], rtol=1e-4, atol=1e-5)
