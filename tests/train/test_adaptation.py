"""Domain adaptation, distillation and input adaptation: the pieces against direct computations,
the modes through the sweep on the committed source models, and the refusals."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from functions.config import Config, get_setup, profile
from functions.core.errors import DataError
from functions.data.adapt import adapt_images, channel_stats
from functions.data.catalog import check_adaptable
from functions.data.tasks import Split, load_task
from functions.models.study_cnn import build
from functions.train.adaptation import (adapt, adapt_batch_norm, aligned_features, coral_loss, reverse_gradient,
                                        reversal_weight, train_aligned)
from functions.train.distillation import check_teacher, distillation_loss
from functions.train.reference import Trajectory


def test_gradient_reversal_negates_and_scales_the_gradient_exactly():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 7, dtype=torch.float64)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, -0.3 * upstream)


def test_reversal_weight_ramps_from_zero_to_its_final_value():
    assert reversal_weight(0.0, 2.0) == 0.0
    assert reversal_weight(1.0, 2.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-10)) - 1))
    steps = [reversal_weight(p / 10, 1.0) for p in range(11)]
    assert steps == sorted(steps) and steps[-1] < 1.0


def test_a_constant_reversal_weight_holds_its_value_from_the_first_step():
    assert [reversal_weight(p, 0.3, "constant") for p in (0.0, 0.5, 1.0)] == [0.3, 0.3, 0.3]
    with pytest.raises(DataError, match="unknown reversal schedule 'flat'"):
        reversal_weight(0.5, 1.0, "flat")


def test_coral_is_zero_for_identical_batches_and_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    target = 2 * torch.randn(30, 6, generator=generator, dtype=torch.float64) + 1
    assert coral_loss(source, source).item() == 0.0

    def covariance(x):  # Sun & Saenko's formula: (X'X - (1'X)'(1'X) / n) / (n - 1)
        x = x.numpy()
        ones = x.sum(0, keepdims=True)
        return (x.T @ x - ones.T @ ones / len(x)) / (len(x) - 1)

    expected = np.sum((covariance(source) - covariance(target)) ** 2) / (4 * 6 ** 2)
    assert coral_loss(source, target).item() == pytest.approx(expected, rel=1e-12)


def test_coral_refuses_batches_it_cannot_compare():
    with pytest.raises(DataError, match="same width"):
        coral_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(DataError, match="at least two"):
        coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))


def test_adabn_changes_only_the_statistics_below_the_cut():
    cfg = Config(num_channels=4, depth=4, batch_norm=True)
    model = build(cfg, (1, 12, 12), 3, seed=0)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    images = torch.randn(64, 1, 12, 12) * 3 + 2  # a shifted domain
    adapt_batch_norm(model, images, blocks=2, batch_size=16)
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    for name, value in model.named_buffers():
        block = int(name.split(".")[1])
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(value, buffers[name]) == (block >= 2), name
    # the first block's mean is the plain average of its convolution's outputs over all the images
    with torch.no_grad():
        conv = model.blocks[0].conv(images)
    assert torch.allclose(model.blocks[0][1].running_mean, conv.mean((0, 2, 3)), atol=1e-5)
    assert not model.training


def test_adabn_needs_batch_norm_and_images():
    plain = build(Config(num_channels=4, depth=2), (1, 8, 8), 3, seed=0)
    with pytest.raises(DataError, match="batch_norm=true"):
        adapt_batch_norm(plain, torch.zeros(4, 1, 8, 8), blocks=2)
    normed = build(Config(num_channels=4, depth=2, batch_norm=True), (1, 8, 8), 3, seed=0)
    with pytest.raises(DataError, match="target images"):
        adapt_batch_norm(normed, torch.zeros(0, 1, 8, 8), blocks=2)


def test_distillation_loss_is_cross_entropy_at_alpha_zero_and_the_soft_term_at_one():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.randint(0, 5, (8,), generator=generator)
    assert torch.equal(distillation_loss(student, teacher, labels, 3.0, 0.0), F.cross_entropy(student, labels))
    assert distillation_loss(teacher, teacher, labels, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    p_teacher, p_student = (torch.softmax(z / 3.0, 1) for z in (teacher, student))
    direct = (p_teacher * (p_teacher.log() - p_student.log())).sum(1).mean() * 9
    assert distillation_loss(student, teacher, labels, 3.0, 1.0).item() == pytest.approx(direct.item(), rel=1e-5)


@pytest.mark.parametrize("changes, message", [({"kd_temperature": 0.0}, "kd_temperature"),
                                              ({"kd_alpha": 1.5}, "kd_alpha"), ({"kd_alpha": -0.1}, "kd_alpha"),
                                              ({"dann_weight": -1.0}, "dann_weight")])
def test_distillation_and_adaptation_parameters_are_range_checked(changes, message):
    with pytest.raises(DataError, match=message):
        Config().replace(**changes)


def test_a_teacher_for_other_classes_or_images_is_refused():
    teacher = build(Config(num_channels=4, depth=2), (1, 28, 28), 10, seed=0)
    with pytest.raises(DataError, match="predicts 10 classes but the target task has 3"):
        check_teacher(teacher, 3, (1, 28, 28))
    with pytest.raises(DataError, match="shape"):
        check_teacher(teacher, 10, (1, 8, 8))


def test_modes_refuse_what_they_cannot_do():
    cfg, _ = profile("quick", get_setup("MNIST_to_digits"))
    with pytest.raises(DataError, match="cut points 1..6"):
        cfg.with_mode("dann").check_cut(0)
    with pytest.raises(DataError, match="needs batch_norm=true"):
        cfg.with_mode("adabn").replace(batch_norm=False)
    assert cfg.with_mode("coral").batch_norm and cfg.with_mode("coral").default_cuts() == (1, 2, 3, 4, 5, 6)
    assert cfg.with_mode("source_only").default_cuts() == (0,) and not cfg.with_mode("distill").batch_norm
    source = Split(torch.zeros(8, 1, 28, 28), torch.zeros(8, dtype=torch.long))
    model = build(cfg.with_mode("dann"), (1, 28, 28), 10, seed=0)
    with pytest.raises(DataError, match="unlabelled target images"):
        adapt("dann", model, 2, source, source, source.subset(torch.arange(1)), source)


def resized(x, shape):
    """Images resized and converted as another domain's network takes them, not normalised."""
    return adapt_images(x, shape[0], tuple(shape[1:]), 0.0, 1.0, interpolation="bilinear")


def test_input_adaptation_resizes_and_converts_channels():
    grey = torch.rand(3, 1, 8, 8)
    large = resized(grey, (1, 28, 28))
    assert large.shape == (3, 1, 28, 28) and 0 <= large.min() and large.max() <= 1
    flat = resized(torch.full((2, 1, 28, 28), 0.25), (1, 8, 8))  # shrinking averages: a flat image stays flat
    assert torch.allclose(flat, torch.full_like(flat, 0.25))
    rgb = resized(grey, (3, 8, 8))
    assert torch.equal(rgb[:, 0], rgb[:, 2]) and torch.equal(rgb[:, 1], grey[:, 0])
    assert torch.allclose(resized(rgb, (1, 8, 8)), grey, atol=1e-6)  # luminance of a grey RGB image
    mean, std = channel_stats("MNIST", 3)
    assert mean.shape == (1, 3, 1, 1) and torch.all(mean == 0.1307)


def test_shapes_that_cannot_be_adapted_are_refused_naming_the_fix():
    with pytest.raises(DataError, match="only grey"):
        check_adaptable((2, 28, 28), (3, 28, 28))
    with pytest.raises(DataError, match="positive sizes"):
        resized(torch.zeros(1, 1, 8, 8), (1, 0, 8))


def test_the_digits_reach_an_mnist_network_at_its_size():
    task = load_task("digits", list(range(10)), 0.1, 42, shape=(1, 28, 28))
    assert task.train.x.shape[1:] == (1, 28, 28) and len(task.test) == 596
    native = load_task("digits", list(range(10)), 0.1, 42)
    assert native.train.x.shape[1:] == (1, 8, 8)
    cfg, _ = profile("quick", get_setup("MNIST_to_digits"))
    assert cfg.target_task().train.x.shape[1:] == (1, 28, 28)


def test_aligned_features_pool_large_maps_and_keep_small_ones():
    assert aligned_features(torch.zeros(2, 16, 28, 28)).shape == (2, 16 * 16)
    assert aligned_features(torch.zeros(2, 16, 3, 3)).shape == (2, 16 * 9)


def test_the_modes_run_as_resumable_sweeps_and_record_what_they_measure(output_root):
    """Each mode on MNIST -> digits from the committed source models (BatchNorm variant, 64-channel
    teacher), one run each at a short budget; a second sweep finds everything saved."""
    from functions.notebooks.study import plan
    from functions.runs.store import load_results
    from functions.runs.sweep import run_sweep
    short = {"num_train": 1, "min_steps_per_epoch": 3}
    found = {}
    for mode in ("source_only", "adabn", "dann", "coral", "distill"):
        cuts = None if mode == "source_only" else [6]
        setup, cfg, grid = plan("MNIST_to_digits", None, "quick", mode, [0.05], 1, cuts, overrides=short)
        paths = run_sweep(setup, cfg, grid, progress=False)
        assert ("baselines" in paths) == (mode == "distill")  # the adaptation modes train no baselines
        params, records = load_results(paths["results"])
        assert params["batch_norm"] == (mode != "distill") and len(records) == 1
        found[mode] = records[0]
        again = []
        run_sweep(setup, cfg, grid, progress=False, on_run=again.append)
        assert again == []
    for mode in ("source_only", "adabn", "dann", "coral"):
        record = found[mode]
        assert record["n_train"] == 50 and 0 <= record["test_acc"] <= 1
        assert record["val_acc"] > 0.9  # the source's validation split: the source task is not forgotten
    assert found["source_only"]["sampled_cut_point"] == 0 and found["adabn"]["sampled_cut_point"] == 6
    assert found["adabn"]["test_acc"] != found["source_only"]["test_acc"]  # target statistics change the outputs
    distilled = found["distill"]
    assert distilled["teacher_params"] > 10 * distilled["student_params"] > 0
    assert distilled["teacher_ms_per_image"] > 0 and 0 <= distilled["teacher_test_acc"] <= 1


def test_a_mode_refused_writes_nothing(output_root):
    from functions.notebooks.study import plan
    with pytest.raises(DataError, match="cut points 1..6"):
        plan("MNIST_to_digits", None, "quick", "dann", [0.05], 1, [0])
    with pytest.raises(DataError, match="kd_alpha"):
        plan("MNIST_to_digits", None, "quick", "distill", [0.05], 1, [2], overrides={"kd_alpha": 2.0})
    from functions.runs.sweep import run_sweep
    with pytest.raises(DataError, match="batch_norm=true is the network variant of the adaptation modes"):
        run_sweep(*plan("MNIST_to_digits", None, "quick", "FR", [0.05], 1, [2], overrides={"batch_norm": True}),
                  progress=False)
    assert not (output_root / "MNIST_to_digits").exists()


def test_what_a_method_is_worth_is_read_off_the_labelled_curve_log_linearly():
    import pandas as pd
    from functions.analysis.adaptation import labelled_images, labelled_worth
    curve = pd.Series({0.01: 0.70, 0.1: 0.80, 1.0: 0.90})
    relation, fraction = labelled_worth(0.75, curve)
    assert relation == "=" and fraction == pytest.approx(10 ** -1.5)
    assert labelled_worth(0.85, curve) == ("=", pytest.approx(10 ** -0.5))
    assert labelled_worth(0.5, curve) == ("<", 0.01) and labelled_worth(0.95, curve) == (">", 1.0)
    assert labelled_images(0.01, 1081, 10) == 10 and labelled_images(0.001, 1081, 10) == 10  # one per class at least


def test_the_distillation_table_sets_teacher_alone_and_distilled_side_by_side():
    from functions.analysis.adaptation import distillation_gain, distillation_table
    distilled = [{"sampled_percentage": 0.05, "sampled_cut_point": c, "repeat": r, "test_acc": 0.6 + 0.1 * c,
                  "val_acc": 0.6 + 0.1 * c, "status": "ok", "teacher_test_acc": 0.9, "teacher_params": 1000,
                  "teacher_ms_per_image": 0.2, "student_params": 100, "student_ms_per_image": 0.05}
                 for c in (0, 1) for r in (0, 1)]
    # validation picks cut 0 for the student alone, although its test accuracy is higher at cut 1
    alone = [{"sampled_percentage": 0.05, "sampled_cut_point": c, "repeat": r, "test_acc": 0.65 + 0.05 * c,
              "val_acc": 0.7 - 0.05 * c, "status": "ok"} for c in (0, 1) for r in (0, 1)]
    table = distillation_table(distilled, alone).set_index("model")
    assert table.loc["teacher (fine-tuned whole)", "test accuracy"] == pytest.approx(0.9)
    assert table.loc["student distilled", "cut"] == 1 and table.loc["student distilled", "test accuracy"] == pytest.approx(0.7)
    assert table.loc["student alone (FR)", "cut"] == 0 and table.loc["student alone (FR)", "test accuracy"] == pytest.approx(0.65)
    assert table.loc["student alone (FR)", "parameters"] == 100
    gain = distillation_gain(distilled, alone)
    assert gain.loc[0, 0.05] == pytest.approx(-0.05) and gain.loc[1, 0.05] == pytest.approx(0.0)


def test_alignment_trains_its_paired_steps_through_the_trainer_and_keeps_the_last_weights():
    model = build(Config(num_channels=4, depth=3, batch_norm=True), (1, 12, 12), 3, seed=0).double()
    generator = torch.Generator().manual_seed(0)
    source = Split(torch.randn(50, 1, 12, 12, generator=generator, dtype=torch.float64), torch.arange(50) % 3)
    target = torch.randn(21, 1, 12, 12, generator=generator, dtype=torch.float64) + 1
    statistics = {name: value.clone() for name, value in model.named_buffers()}
    trajectory = Trajectory(1000)
    status = train_aligned(model, "coral", 2, source, target, weight=1.0, lr=1e-3, epochs=2, batch_size=8,
                           min_steps_per_epoch=5, seed=0, trajectory=trajectory)
    assert status == "ok" and len(trajectory.points) == 2 * 3 * 2  # epochs x passes x whole batches a pass
    assert all(torch.equal(value, statistics[name]) for name, value in model.named_buffers())  # source statistics
    last = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert trajectory.points[-1][1] == pytest.approx(last.sum().item(), rel=1e-12) and not model.training


def confident_model(seed: int = 0):
    """A small BatchNorm CNN whose head is scaled up, so that its losses are near 0 or large."""
    model = build(Config(num_channels=4, depth=2, batch_norm=True), (1, 8, 8), 3, seed=seed).eval()
    with torch.no_grad():
        model.fc.weight.mul_(200.0)
    return model


def two_regions(model, count: int, generator):
    """Dark and bright noisy images; the dark ones labelled as ``model`` predicts them (loss near
    0), the bright ones as it least expects (a large loss)."""
    dark = 0.1 * torch.rand(count, 1, 8, 8, generator=generator)
    bright = 0.9 + 0.1 * torch.rand(count, 1, 8, 8, generator=generator)
    with torch.no_grad():
        labels = torch.cat([model(dark).argmax(1), model(bright).argmin(1)])
    return Split(torch.cat([dark, bright]), labels), dark, bright


def test_dev_risk_weights_the_source_loss_towards_where_the_target_lies():
    from functions.train.adaptation import dev_risk
    generator = torch.Generator().manual_seed(0)
    model = confident_model()
    source, _, _ = two_regions(model, 300, generator)
    val, dark, bright = two_regions(model, 200, generator)
    with torch.no_grad():
        losses = F.cross_entropy(model(val.x), val.y, reduction="none")
    dark_loss, bright_loss = losses[:200].mean().item(), losses[200:].mean().item()
    assert bright_loss > 5 * dark_loss + 1  # the two regions' losses are far apart
    _, fresh_dark, fresh_bright = two_regions(model, 200, generator)
    # a target like the source: the plain validation loss; a target of bright images: their loss
    alike = dev_risk(model, source, val, torch.cat([fresh_dark, fresh_bright]), seed=0)
    assert alike == pytest.approx(losses.mean().item(), rel=0.1)
    shifted = dev_risk(model, source, val, fresh_bright, seed=0)
    assert shifted == pytest.approx(bright_loss, rel=0.1)
    assert dev_risk(model, source, val, fresh_dark, seed=0) < 0.2 * alike


def shifted_domains() -> tuple:
    """(model, source, source validation, target, target test) for choosing between candidate runs:
    the target images lie in the bright region the source classifier gets wrong."""
    generator = torch.Generator().manual_seed(1)
    model = confident_model(seed=1)
    source, _, _ = two_regions(model, 40, generator)
    val, _, _ = two_regions(model, 30, generator)
    _, _, target = two_regions(model, 20, generator)
    test = Split(target, torch.zeros(len(target), dtype=torch.long))
    return model, source, val, target, test


def test_several_alignment_weights_keep_the_run_with_the_lowest_target_risk_estimate():
    model, source, val, target, test = shifted_domains()
    _, result = adapt("coral", model, 1, source, val, Split(target, test.y), test, weights=(0.5, 4.0), epochs=1,
                      batch_size=8, min_steps_per_epoch=2)
    risks = {w: result.details[f"dev_risk_{w:g}"] for w in (0.5, 4.0)}
    assert result.details["chosen_weight"] == min(risks, key=risks.get) and all(np.isfinite(list(risks.values())))
    with pytest.raises(DataError, match="takes none"):
        adapt("adabn", model, 1, source, val, Split(target, test.y), test, weights=(0.5, 4.0))


def test_several_rates_and_weights_are_chosen_together_by_the_target_risk_estimate():
    model, source, val, target, test = shifted_domains()
    common = dict(epochs=1, batch_size=8, min_steps_per_epoch=2)
    _, result = adapt("dann", model, 1, source, val, Split(target, test.y), test, weights=(0.5, 4.0),
                      lrs=(1e-4, 1e-2), **common)
    risks = {(w, lr): result.details[f"dev_risk_{w:g}_lr{lr:g}"] for w in (0.5, 4.0) for lr in (1e-4, 1e-2)}
    chosen = (result.details["chosen_weight"], result.details["chosen_lr"])
    assert chosen == min(risks, key=risks.get) and all(np.isfinite(list(risks.values())))
    # the chosen pair is the run that pair makes alone, from the same seed
    _, alone = adapt("dann", model, 1, source, val, Split(target, test.y), test, weights=(chosen[0],),
                     lrs=(chosen[1],), **common)
    assert alone.test_acc == result.test_acc and alone.val_acc == result.val_acc and alone.details is None
    # every candidate is scored on the test labels after the choice: the chosen one's score is the run's
    assert result.details[f"test_acc_{chosen[0]:g}_lr{chosen[1]:g}"] == result.test_acc
    assert result.details[f"source_val_acc_{chosen[0]:g}_lr{chosen[1]:g}"] == result.val_acc
    other = next(key for key in risks if key != chosen)
    _, other_alone = adapt("dann", model, 1, source, val, Split(target, test.y), test, weights=(other[0],),
                           lrs=(other[1],), **common)
    assert result.details[f"test_acc_{other[0]:g}_lr{other[1]:g}"] == other_alone.test_acc
    assert result.details[f"source_val_acc_{other[0]:g}_lr{other[1]:g}"] == other_alone.val_acc
    # one weight, several rates: the rate alone is recorded as chosen
    _, by_rate = adapt("coral", model, 1, source, val, Split(target, test.y), test, lrs=(1e-4, 1e-2), **common)
    assert "chosen_weight" not in by_rate.details and by_rate.details["chosen_lr"] in (1e-4, 1e-2)


def test_dann_chooses_its_reversal_schedule_by_the_target_risk_estimate_and_only_dann_has_one():
    model, source, val, target, test = shifted_domains()
    common = dict(epochs=1, batch_size=8, min_steps_per_epoch=2)
    _, result = adapt("dann", model, 1, source, val, Split(target, test.y), test, weights=(4.0,),
                      schedules=("ramp", "constant"), **common)
    risks = {s: result.details[f"dev_risk_4_{s}"] for s in ("ramp", "constant")}
    assert result.details["chosen_schedule"] == min(risks, key=risks.get) and set(result.details) == {
        "chosen_schedule", *(f"{what}_4_{s}" for what in ("dev_risk", "test_acc", "source_val_acc") for s in risks)}
    assert risks["ramp"] != risks["constant"]  # the schedule changes what was trained
    _, alone = adapt("dann", model, 1, source, val, Split(target, test.y), test, weights=(4.0,),
                     schedules=(result.details["chosen_schedule"],), **common)
    assert alone.test_acc == result.test_acc and alone.val_acc == result.val_acc
    with pytest.raises(DataError, match="reversal weight's of \\['dann', 'cdan'\\]; 'coral' has none"):
        adapt("coral", model, 1, source, val, Split(target, test.y), test, schedules=("ramp", "constant"))


def test_candidate_weights_are_typed_range_checked_and_resume_older_files():
    from functions.commands.study import overrides
    from functions.config import LEGACY_VALUES, TUNED_SETTINGS
    from functions.runs.store import differing_keys
    tuned = Config().with_mode("dann")
    assert tuned.alignment_weights == TUNED_SETTINGS["dann"]["dann_weights"]
    dann = tuned.replace(dann_weights=())
    coral = Config().with_mode("coral").replace(coral_weights=(), coral_weight=2.0)
    assert dann.alignment_weights == (1.0,) and coral.alignment_weights == (2.0,)
    assert dann.replace(**overrides(["dann_weights=0.1,0.3,1"])).alignment_weights == (0.1, 0.3, 1)
    with pytest.raises(DataError, match="dann_weights"):
        dann.replace(dann_weights=(0.1, -1.0))
    with pytest.raises(DataError, match="kd_alphas"):
        Config().with_mode("distill").replace(kd_alphas=(0.5, 1.5))
    assert "dann_weights" not in Config().params() and "kd_alphas" not in dann.params()  # each in its mode's files
    before = {k: v for k, v in dann.params().items() if k != "dann_weights"}  # a file written before the list
    assert differing_keys(before, dann.params(), LEGACY_VALUES) == []
    assert differing_keys(before, dann.replace(dann_weights=(0.1, 1.0)).params(), LEGACY_VALUES) == ["dann_weights"]


def test_dann_tuned_chooses_its_reversal_schedule_and_files_written_before_schedules_resume():
    from functions.commands.study import overrides
    from functions.config import DANN_SCHEDULES, LEGACY_VALUES
    from functions.runs.store import differing_keys
    tuned = Config().with_mode("dann-tuned")
    assert tuned.reversal_schedules == DANN_SCHEDULES and Config().with_mode("dann").reversal_schedules == ("ramp",)
    assert "dann_schedules" not in Config().with_mode("coral-tuned").params()
    assert tuned.replace(**overrides(["dann_schedules=constant"])).reversal_schedules == ("constant",)
    with pytest.raises(DataError, match=r"dann_schedules=\('ramp', 'flat'\) must all be one of \['ramp', 'constant'\]"):
        tuned.replace(**overrides(["dann_schedules=ramp,flat"]))
    dann = Config().with_mode("dann")
    before = {k: v for k, v in dann.params().items() if not k.startswith("dann_schedule")}
    assert differing_keys(before, dann.params(), LEGACY_VALUES) == []
    assert differing_keys(before, tuned.params(), LEGACY_VALUES) == ["dann_schedules", "lr_fine_tunes"]
    assert tuned.as_chosen({"chosen_schedule": "constant", "chosen_lr": 1e-3}).reversal_schedules == ("constant",)


def test_distillation_keeps_the_temperature_and_share_with_the_best_validation_accuracy(output_root):
    from functions.notebooks.study import plan
    from functions.runs.store import load_results
    from functions.runs.sweep import run_sweep
    short = {"num_train": 1, "min_steps_per_epoch": 3, "kd_temperatures": (2.0, 4.0), "kd_alphas": (0.5,)}
    setup, cfg, grid = plan("MNIST_to_digits", None, "quick", "distill", [0.05], 1, [6], overrides=short)
    (record,) = load_results(run_sweep(setup, cfg, grid, progress=False, baselines=False)["results"])[1]
    candidates = {t: record[f"val_acc_t{t:g}_a0.5"] for t in (2.0, 4.0)}
    assert record["chosen_alpha"] == 0.5 and record["val_acc"] == max(candidates.values())
    assert candidates[record["chosen_temperature"]] == record["val_acc"]


# what trains one candidate of each tuned mode, where the mode's run looks it up
CANDIDATE_TRAINER = {"dann": ("functions.train.adaptation", "train_aligned"), "distill": ("functions.runs.domain", "distil")}
CANDIDATE_TRAINER["coral-tuned"] = CANDIDATE_TRAINER["dann-tuned"] = CANDIDATE_TRAINER["dann"]


@pytest.mark.parametrize("mode, short", [
    ("dann", {"dann_weights": (0.1, 1.0)}),
    ("coral-tuned", {"coral_weights": (), "lr_fine_tunes": (1e-4, 3e-3)}),
    ("dann-tuned", {"dann_weights": (), "lr_fine_tunes": (1e-3,), "dann_schedules": ("ramp", "constant")}),
    ("distill", {"kd_temperatures": (2.0, 4.0), "kd_alphas": (0.5,)})])
def test_a_tuned_run_trained_again_at_its_chosen_setting_alone_comes_back_exactly(mode, short, output_root,
                                                                                 monkeypatch):
    import importlib
    from functions.notebooks.study import plan
    from functions.runs import recheck
    from functions.runs.store import load_results
    from functions.runs.sweep import run_sweep
    overrides = {"num_train": 1, "min_steps_per_epoch": 3, **short}
    setup, cfg, grid = plan("MNIST_to_digits", None, "quick", mode, [0.05], 1, [6], overrides=overrides)
    (record,) = load_results(run_sweep(setup, cfg, grid, progress=False, baselines=False)["results"])[1]
    module, name = CANDIDATE_TRAINER[mode]
    module = importlib.import_module(module)
    trained, train = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **kwargs: trained.append(1) or train(*args, **kwargs))
    model, check = recheck.recheck(setup, cfg, 6, 0.05, 0, tolerance=0.0, device="cpu")
    assert len(trained) == (1 if mode == "distill" else 2)  # an alignment's float64 steps train once more
    assert check["test_acc"] == record["test_acc"] and check["reproduced"]
    if mode == "coral-tuned":  # the rate chosen without target labels is the record's rate
        risks = {lr: record[f"dev_risk_1_lr{lr:g}"] for lr in (1e-4, 3e-3)}
        assert record["lr"] == record["chosen_lr"] == min(risks, key=risks.get)
    if mode == "dann-tuned":  # and so is the schedule
        risks = {s: record[f"dev_risk_1_{s}"] for s in ("ramp", "constant")}
        assert record["chosen_schedule"] == min(risks, key=risks.get)


def test_mcc_is_the_column_normalised_off_diagonal_confusion_of_entropy_weighted_predictions():
    from functions.train.adaptation import mcc_loss
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 0.1], [-1.0, 3.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.softmax(logits / 2.5, 1).numpy()
    entropy = -(y * np.log(y)).sum(1)
    w = 1 + np.exp(-entropy)
    w = len(w) * w / w.sum()
    confusion = y.T @ np.diag(w) @ y
    confusion = confusion / confusion.sum(0, keepdims=True)  # each column over its sum (Jin et al., eq. 4)
    expected = (confusion.sum() - np.trace(confusion)) / 3
    assert mcc_loss(logits).item() == pytest.approx(expected, rel=1e-12)
    confident = torch.tensor([[50.0, 0.0], [0.0, 50.0]], dtype=torch.float64)
    assert mcc_loss(confident, 1.0).item() == pytest.approx(0.0, abs=1e-12)  # no confusion between classes
    with pytest.raises(DataError, match="two classes or more"):
        mcc_loss(torch.zeros(4))


def test_cdan_conditions_the_critic_on_the_outer_product_and_weights_images_by_entropy():
    from functions.train.adaptation import ConditionedFeatures, cdan_loss
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    conditioned = ConditionedFeatures(4, 3, seed=0)
    assert not conditioned.randomised and conditioned.width == 12
    p = torch.softmax(logits, 1)
    outer = conditioned(features, p)
    assert torch.allclose(outer[2].reshape(4, 3), torch.outer(features[2], p[2]))
    critic = torch.nn.Linear(12, 1).double()
    loss = cdan_loss(critic, conditioned, features, logits, reversal=0.5)
    entropy = -(p * p.log()).sum(1)
    w = 1 + torch.exp(-entropy)
    w = 6 * w / w.sum()
    domains = torch.tensor([0.0, 0, 0, 1, 1, 1], dtype=torch.float64)
    direct = (F.binary_cross_entropy_with_logits(critic(outer).squeeze(1), domains, reduction="none") * w).mean()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-12)
    loss.backward()  # the features' gradient is the critic's, reversed and scaled
    grad_features = features.grad.clone()
    features.grad = None
    critic.zero_grad()
    direct = (F.binary_cross_entropy_with_logits(critic(conditioned(features, p)).squeeze(1), domains,
                                                 reduction="none") * w).mean()
    direct.backward()
    assert torch.allclose(grad_features, -0.5 * features.grad)
    wide = ConditionedFeatures(2000, 10, seed=3)
    assert wide.randomised and wide(torch.ones(2, 2000), torch.ones(2, 10) / 10).shape == (2, 1024)


@pytest.mark.parametrize("method", ["mcc", "cdan"])
def test_mcc_and_cdan_train_through_the_trainer_and_choose_their_weight_without_target_labels(method):
    model, source, val, target, test = shifted_domains()
    statistics = {name: value.clone() for name, value in model.named_buffers()}
    common = dict(epochs=1, batch_size=8, min_steps_per_epoch=2)
    adapted, result = adapt(method, model, 1, source, val, Split(target, test.y), test, weights=(0.3, 1.0), **common)
    risks = {w: result.details[f"dev_risk_{w:g}"] for w in (0.3, 1.0)}
    assert result.details["chosen_weight"] == min(risks, key=risks.get) and all(np.isfinite(list(risks.values())))
    assert result.status == "ok" and 0 <= result.test_acc <= 1
    moved = [not torch.equal(a, b) for a, b in zip(adapted.parameters(), model.parameters())]
    assert any(moved)  # it trained
    assert all(torch.equal(value, statistics[name]) for name, value in adapted.named_buffers())  # source statistics
    _, alone = adapt(method, model, 1, source, val, Split(target, test.y), test,
                     weights=(result.details["chosen_weight"],), **common)
    assert alone.test_acc == result.test_acc and alone.val_acc == result.val_acc
    with pytest.raises(DataError, match="reversal weight's"):
        adapt("mcc", model, 1, source, val, Split(target, test.y), test, schedules=("ramp", "constant"))


def test_mcc_and_cdan_are_modes_with_typed_weights_and_cdan_ramps_its_reversal():
    cfg = Config().with_mode("cdan")
    assert cfg.alignment_weights == (0.3, 1.0) and cfg.reversal_schedules == ("ramp",) and cfg.batch_norm
    assert Config().with_mode("mcc-tuned").mode == "mcc-tuned"
    assert Config().with_mode("mcc").params()["mcc_weights"] == [0.3, 1.0]
    assert "mcc_weights" not in Config().with_mode("dann").params()
    with pytest.raises(DataError, match="mcc_weight"):
        Config().with_mode("mcc").replace(mcc_weight=0.0)
