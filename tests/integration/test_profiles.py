"""The named profiles: ``paper`` is the upstream study's grid, ``quick`` the one that
docs/how-to/profiles.md documents, and both reach a sweep unchanged from the command line and the notebooks' plan."""
import pytest

from functions.__main__ import main
from functions.analysis.stats import repeats_to_detect
from functions.config import SETUPS, Config, get_setup, profile
from functions.core.errors import DataError
from functions.notebooks.study import plan

PAPER_PERCENTAGES = (0.001, 0.01, 0.1, 0.5, 1.0)
PAPER_REPEATS = {0.001: 25, 0.01: 25, 0.1: 20, 0.5: 5, 1.0: 5}
NETWORK = {"depth": 6, "kernel_size": 3, "activation_function": "ReLU", "use_pooling": True,
           "pooling_every_n_layers": 2, "pooling_stride": 2, "two_linear_layers": False}
PROTOCOL = {"lr_pretrain": 0.001, "lr_fine_tune": 0.001, "val_split": 0.1, "generate_dataset_seed": 42}
NOT_CIFAR = [key for key in SETUPS if SETUPS[key].source_dataset != "CIFAR10"]
CIFAR = [key for key in SETUPS if SETUPS[key].source_dataset == "CIFAR10"]


def _fields(cfg: Config, names) -> dict:
    return {name: getattr(cfg, name) for name in names}


def _classes_of(cfg: Config, setup) -> None:
    assert (cfg.source_dataset, cfg.pre_train_classes) == (setup.source_dataset, setup.pre_train_classes)
    assert (cfg.target_dataset, cfg.fine_tune_classes) == (setup.target_dataset, setup.fine_tune_classes)


@pytest.mark.parametrize("folder, name", NOT_CIFAR)
def test_paper_profile_is_the_upstream_grid(folder, name):
    setup = get_setup(folder, name)
    cfg, grid = profile("paper", setup)
    _classes_of(cfg, setup)
    assert _fields(cfg, NETWORK) == NETWORK and _fields(cfg, PROTOCOL) == PROTOCOL
    assert cfg.num_channels == 64 and cfg.batch_size == 4096
    assert (cfg.num_train, cfg.num_train_pretrain, cfg.early_stop_patience) == (40, 40, 6)
    assert grid.percentages == PAPER_PERCENTAGES
    assert {p: grid.repeats_for(p) for p in grid.percentages} == PAPER_REPEATS
    assert grid.cut_points == (0, 1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize("folder, name", CIFAR)
def test_paper_profile_on_cifar_trains_in_small_batches_for_fewer_epochs(folder, name):
    setup = get_setup(folder, name)
    cfg, grid = profile("paper", setup)
    _classes_of(cfg, setup)
    assert _fields(cfg, NETWORK) == NETWORK and _fields(cfg, PROTOCOL) == PROTOCOL
    assert cfg.num_channels == 64 and cfg.batch_size == 64
    assert (cfg.num_train, cfg.num_train_pretrain, cfg.early_stop_patience) == (10, 10, 5)
    assert grid.percentages == PAPER_PERCENTAGES
    assert {p: grid.repeats_for(p) for p in grid.percentages} == PAPER_REPEATS
    assert grid.cut_points == tuple(range(7))


@pytest.mark.parametrize("folder, name", sorted(SETUPS))
def test_quick_profile_is_the_documented_small_grid(folder, name):
    """docs/how-to/profiles.md: depth 6, 16 channels, batch 64, at most 10 epochs of at least 100 steps,
    patience 3; 1% and 5%, 2 repeats."""
    setup = get_setup(folder, name)
    cfg, grid = profile("quick", setup)
    _classes_of(cfg, setup)
    assert _fields(cfg, NETWORK) == NETWORK and _fields(cfg, PROTOCOL) == PROTOCOL
    assert (cfg.num_channels, cfg.batch_size, cfg.num_train, cfg.early_stop_patience) == (16, 64, 10, 3)
    # the 8 x 8 digits' 1,081 training images: the grid reaches the whole target
    percentages = (0.01, 0.05, 1.0) if setup.target_dataset == "digits" else (0.01, 0.05)
    assert grid.percentages == percentages and cfg.min_steps_per_epoch == 100
    assert {p: grid.repeats_for(p) for p in grid.percentages} == {p: 2 for p in percentages}
    assert grid.cut_points == tuple(range(7))


@pytest.mark.parametrize("folder, name", NOT_CIFAR)
def test_range_profile_runs_the_quick_network_over_the_upstream_fractions(folder, name):
    """The quick network and protocol (epochs of at least 100 optimiser steps), the upstream
    percentages, at least 3 repeats (more at the small fractions); it reuses the quick source model."""
    from functions.config import source_params
    setup = get_setup(folder, name)
    (cfg, grid), (quick, _) = profile("range", setup), profile("quick", setup)
    _classes_of(cfg, setup)
    assert cfg.params() == quick.params()
    assert cfg.min_steps_per_epoch == 100 and source_params(cfg) == source_params(quick)
    assert grid.percentages == PAPER_PERCENTAGES and grid.cut_points == tuple(range(7))
    repeats = [grid.repeats_for(p) for p in grid.percentages]
    assert min(repeats) >= 3 and repeats == sorted(repeats, reverse=True) and repeats[0] > repeats[-1]
    # where transfer gains most, each cut's test against the baseline, and each pair of arms, can be significant
    arms = len(grid.cut_points) + 1
    assert all(grid.repeats_for(p) > repeats_to_detect(arms * (arms - 1) // 2) for p in (0.001, 0.01))
    assert grid.profile == "range"


def test_results_of_a_profile_other_than_quick_live_in_its_own_folder(output_root):
    from functions.runs.store import results_path
    assert results_path("MNIST", "results", "regular", "FR") == output_root / "MNIST/results/results_regular_FR.json"
    assert results_path("MNIST", "baselines", "regular", profile="range") == \
        output_root / "MNIST/results/range/baselines_regular.json"
    assert plan("MNIST", None, "range", "F")[2].profile == "range"


def test_quick_and_paper_differ_only_in_width_batch_and_epochs_and_their_length():
    setup = get_setup("MNIST")
    (quick, _), (paper, _) = profile("quick", setup), profile("paper", setup)
    differing = {k for k, v in paper.params().items() if quick.params()[k] != v}
    assert differing == {"num_channels", "batch_size", "num_train", "num_train_pretrain", "early_stop_patience",
                         "min_steps_per_epoch"}
    with pytest.raises(DataError, match="unknown profile 'huge'"):
        profile("huge", setup)


def test_plan_of_the_paper_profile_gives_its_grid_in_the_mode_asked_for():
    setup, cfg, grid = plan("MNIST", None, "paper", "FR")
    paper, paper_grid = profile("paper", get_setup("MNIST"))
    assert setup == get_setup("MNIST", "regular") and cfg == paper.with_mode("FR")
    assert (cfg.freeze, cfg.reinit, cfg.truncate) == (True, True, False)
    assert grid == paper_grid
    _, truncated, _ = plan("MNIST", None, "paper", "FT")
    assert truncated.truncate and not truncated.reinit and truncated.num_channels == 64


class Planned(Exception):
    """Raised in place of training: what the command line would have swept."""


@pytest.fixture
def planned_sweeps(monkeypatch):
    from functions.runs import sweep
    seen = []

    def instead_of_training(setup, cfg, grid, baselines=True, **kwargs):
        seen.append((setup, cfg, grid, baselines))
        raise Planned

    monkeypatch.setattr(sweep, "run_sweep", instead_of_training)
    return seen


def test_run_with_the_paper_profile_sweeps_the_paper_grid(planned_sweeps):
    with pytest.raises(Planned):
        main(["run", "MNIST", "--profile", "paper", "--no-progress"])
    ((setup, cfg, grid, baselines),) = planned_sweeps
    assert (setup, cfg, grid, baselines) == (*plan("MNIST", None, "paper", "FR"), True)
    assert cfg.num_channels == 64 and cfg.batch_size == 4096 and cfg.num_train == 40
    assert {p: grid.repeats_for(p) for p in grid.percentages} == PAPER_REPEATS


def test_run_options_narrow_the_paper_grid_and_keep_its_network(planned_sweeps):
    with pytest.raises(Planned):
        main(["run", "MNIST", "--profile", "paper", "--mode", "F", "--percentages", "0.01", "0.5", "--cuts", "2", "4",
              "--set", "lr_fine_tune=0.0005", "--no-baselines"])
    ((_, cfg, grid, baselines),) = planned_sweeps
    assert not baselines and cfg.mode == "F" and cfg.lr_fine_tune == 0.0005
    assert (cfg.num_channels, cfg.batch_size, cfg.early_stop_patience) == (64, 4096, 6)
    assert grid.percentages == (0.01, 0.5) and grid.cut_points == (2, 4)
    assert {p: grid.repeats_for(p) for p in grid.percentages} == {0.01: 25, 0.5: 5}


def test_pretrain_with_the_paper_profile_trains_the_paper_network(monkeypatch, capsys):
    from functions.runs import pretrained
    asked = []
    monkeypatch.setattr(pretrained, "load_pretrained", lambda setup, cfg: asked.append((setup, cfg)))
    assert main(["pretrain", "CIFAR", "--setup", "reverse", "--profile", "paper"]) == 0
    setup = get_setup("CIFAR", "reverse")
    assert asked == [(setup, profile("paper", setup)[0])]
    assert capsys.readouterr().out == f"CIFAR/reverse: {pretrained.pretrained_path(setup, asked[0][1])}\n"


def test_precision_is_a_checked_parameter_that_strategies_keep_at_fp32():
    assert Config().precision == "fp32" and Config(precision="bf16").params()["precision"] == "bf16"
    with pytest.raises(DataError, match="precision='fp16' is unknown.*bf16"):
        Config(precision="fp16")
    with pytest.raises(DataError, match="fp32 only"):
        Config(precision="bf16").with_mode("lora")
