"""Fine-tuning strategies as study modes and the transfer API under them: which parameters train,
at which learning rate, what the adapters add and cost, and the errors users meet."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from functions.config import Config, STRATEGIES
from functions.core.errors import DataError
from functions.data.tasks import Split
from functions.models.study_cnn import build
from functions.notebooks.study import plan
from functions.runs.store import ResultsFile
from functions.runs.sweep import run_sweep
from functions.train import strategies
from functions.core import device
from functions.models.registry import STUDY, create_backbone
from functions.train.finetune import EarlyStopping, Finetuner, ModelCheckpoint, evaluate, predict
from functions.transfer import FeatureExtractor, load_pretrained_model

DEPTH = 6


@pytest.fixture(scope="module")
def source():
    """A study CNN of the quick profile's shape (16 channels, 6 blocks), seeded, untrained: the
    strategies' semantics do not depend on what it learned."""
    cfg = Config(num_channels=16)
    return build(cfg, (1, 28, 28), 5, seed=0)


def quick(mode: str, **changes) -> Config:
    return Config(num_channels=16, num_train=4, batch_size=16, early_stop_patience=2, **changes).with_mode(mode)


def toy_splits(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda k: Split(torch.randn(k, 1, 28, 28, generator=g), torch.arange(k) % 5)
    return make(n), make(20), make(30)


def trainable(tuner: Finetuner) -> set[str]:
    return {name for name, p in tuner.net.named_parameters() if p.requires_grad}


def stage_of(name: str) -> str:
    parts = name.split(".")
    return "head" if parts[0] == "head" else parts[parts.index("stages") + 1]


def test_progressive_unfreezes_one_block_per_stage_from_the_top(source, monkeypatch):
    seen = []
    original = Finetuner.fit

    def spy(self, train, val, **kwargs):
        seen.append((sorted({stage_of(n) for n in trainable(self)}), kwargs["epochs"]))
        return original(self, train, val, **kwargs)

    monkeypatch.setattr(Finetuner, "fit", spy)
    cfg = quick("progressive", stage_epochs=1)
    train, val, test = toy_splits()
    _, result = strategies.train_strategy(cfg, source, 4, 5, train, val, test, start=0, seed=3)
    assert seen == [(["head"], 1), (["block6", "head"], 1), (["block5", "block6", "head"], cfg.num_train)]
    assert result.epochs <= 1 + 1 + cfg.num_train and result.trainable_params == sum(
        p.numel() for n, p in source.named_parameters() if n.startswith(("blocks.4", "blocks.5"))) + source.fc.in_features * 5 + 5


def test_progressive_ends_on_the_best_validation_accuracy_of_any_stage(source, monkeypatch):
    seen = []
    original = ModelCheckpoint.on_epoch_end

    def spy(self, finetuner, epoch, val_acc):
        seen.append(val_acc)
        return original(self, finetuner, epoch, val_acc)

    monkeypatch.setattr(ModelCheckpoint, "on_epoch_end", spy)
    train, val, test = toy_splits(n=60, seed=5)
    _, result = strategies.train_strategy(quick("progressive", stage_epochs=2), source, 3, 5, train, val, test,
                                          start=0, seed=1)
    assert len(seen) == result.epochs and result.val_acc == max(seen)


def test_model_checkpoint_gives_back_the_best_epoch_of_several_fits(source):
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    tuner = Finetuner(backbone, 5, pooling="flatten", seed=0)
    checkpoint = ModelCheckpoint()
    for epoch, (value, val_acc) in enumerate([(1.0, 0.5), (2.0, 0.7), (3.0, 0.6)]):
        torch.nn.init.constant_(tuner.net.head.bias, value)
        checkpoint.on_epoch_end(tuner, epoch, val_acc)
    checkpoint.on_fit_end(tuner)
    assert torch.equal(tuner.net.head.bias, torch.full((5,), 2.0)) and checkpoint.best_val == 0.7


def test_discriminative_learning_rates_decay_from_the_head_down(source):
    cfg = quick("discriminative", lr_decay=0.5)
    tuner = strategies.finetuner_for(cfg, source, 2, 5, seed=0)
    rates = {g["name"]: g["lr"] for g in tuner.param_groups()}
    lr = cfg.lr_fine_tune
    assert rates == pytest.approx({"classifier": lr, "block6": lr / 2, "block5": lr / 4, "block4": lr / 8,
                                   "block3": lr / 16})
    assert {stage_of(n) for n in trainable(tuner)} == {"block3", "block4", "block5", "block6", "head"}


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_lora_adds_rank_times_the_convolutions_sides(source, rank):
    cut = 3
    tuner = strategies.finetuner_for(quick(f"lora_r{rank}"), source, cut, 5, seed=0)
    lora = sum(p.numel() for n, p in tuner.net.named_parameters() if "lora_" in n)
    convs = [source.blocks[i].conv for i in range(cut)]
    assert lora == sum(rank * (c.in_channels * 9 + c.out_channels) for c in convs)
    upper = sum(p.numel() for n, p in source.named_parameters() if n.startswith(("blocks.3", "blocks.4", "blocks.5")))
    assert tuner.trainable_parameters() == lora + upper + source.fc.in_features * 5 + 5
    frozen_base = [n for n, p in tuner.net.named_parameters() if "base_layer" in n]
    assert frozen_base and not any(p.requires_grad for n, p in tuner.net.named_parameters() if "base_layer" in n)


@pytest.mark.parametrize("mode", ["lora_r4", "ia3"])
def test_merged_adapters_compute_what_the_adapted_network_did(source, mode):
    tuner = strategies.finetuner_for(quick(mode), source, 4, 5, seed=0)
    with torch.no_grad():
        for name, p in tuner.net.named_parameters():
            if "lora_B" in name or "ia3_l" in name:
                p.normal_()  # trained adapters are not the identity
    x = torch.randn(8, 1, 28, 28)
    tuner.net.eval()
    adapted = tuner.net(x)
    tuner.merge()
    assert not any("lora_" in n or "ia3_" in n for n, _ in tuner.net.named_parameters())
    torch.testing.assert_close(tuner.net(x), adapted, rtol=1e-4, atol=1e-4)


def test_bitfit_trains_only_the_frozen_blocks_biases_above_them_everything(source):
    tuner = strategies.finetuner_for(quick("bitfit"), source, 4, 5, seed=0)
    names = trainable(tuner)
    below = {n for n in names if stage_of(n) in ("block1", "block2", "block3", "block4")}
    assert below == {f"backbone.stages.block{i}.0.bias" for i in range(1, 5)}
    assert {f"backbone.stages.block{i}.0.weight" for i in (5, 6)} <= names and "head.weight" in names


def test_strategies_with_a_frozen_prefix_train_from_the_cached_prefix(source):
    """Inputs that are the frozen blocks' outputs give the same run as the images."""
    cfg = quick("discriminative")
    train, val, test = toy_splits()
    prefix = lambda s: Split(source.features(s.x, 0, 3).detach(), s.y)
    _, from_images = strategies.train_strategy(cfg, source, 3, 5, train, val, test, start=0, seed=4)
    _, from_prefix = strategies.train_strategy(cfg, source, 3, 5, prefix(train), prefix(val), prefix(test), start=3,
                                              seed=4)
    assert from_prefix.test_acc == pytest.approx(from_images.test_acc, abs=0.05)
    assert (from_prefix.epochs, from_prefix.trainable_params) == (from_images.epochs, from_images.trainable_params)
    assert Config().with_mode("discriminative").prefix_cached and not Config().with_mode("lora").prefix_cached


def test_bad_strategy_settings_are_refused(source):
    with pytest.raises(DataError, match="unknown mode 'warmup'.*progressive"):
        Config().with_mode("warmup")
    with pytest.raises(DataError, match="lr_decay=1.5 must be in \\(0, 1\\]"):
        Config(lr_decay=1.5)
    with pytest.raises(DataError, match="lr_decay=0"):
        Config(lr_decay=0.0)
    with pytest.raises(DataError, match="stage_epochs=12 must be in 1..num_train=10"):
        Config(num_train=10, stage_epochs=12, strategy="progressive", reinit=False)
    with pytest.raises(DataError, match="unknown mode 'lora_r0'"):
        Config().with_mode("lora_r0")
    with pytest.raises(DataError, match="lora_rank=0 must be at least 1"):
        Config(lora_rank=0)
    with pytest.raises(DataError, match="larger than backbone.stages.block1.0 allows \\(9"):
        strategies.finetuner_for(quick("lora_r10"), source, 2, 5, seed=0)
    tuner = strategies.finetuner_for(quick("FR").replace(strategy="bitfit", reinit=False), source, 2, 5, seed=0)
    with pytest.raises(DataError, match="hold no convolution.*backbone.stages.block1.0"):
        tuner.add_lora([], 2, 4.0)
    with pytest.raises(DataError, match="unknown layer\\(s\\) \\['blocks.0'\\].*'block1'"):
        tuner.freeze_layers(["blocks.0"])
    with pytest.raises(DataError, match="mode 'lora' needs freeze=true, reinit=false, truncate=false"):
        Config(strategy="lora", reinit=True)


def test_a_results_file_of_another_rank_is_refused_naming_the_keys(tmp_path):
    r4 = quick("lora_r4")
    path = tmp_path / "results_regular_lora_r4.json"
    ResultsFile(path, r4.params()).add({"lr": 0.001, "sampled_percentage": 0.01, "sampled_cut_point": 1, "repeat": 0,
                                        "test_acc": 0.5, "train_acc": 0.5})
    assert json.loads(path.read_text())[0]["lora_rank"] == 4 and r4.mode == "lora_r4"
    with pytest.raises(DataError, match="lora_rank"):
        ResultsFile(path, quick("lora_r2").params())
    with pytest.raises(DataError, match="strategy"):
        ResultsFile(path, quick("ia3").params())
    # the plain modes' files keep their parameters as before: no strategy keys in them
    assert not {"strategy", "lora_rank", "lr_decay", "stage_epochs"} & set(quick("FR").params())


@pytest.mark.slow
def test_a_strategy_sweep_writes_resumes_and_records_parameters_counts(output_root, mnist_target):
    setup, cfg, grid = plan("MNIST", mode="bitfit", percentages=[0.01], repeats=1, cut_points=[5, 6],
                            overrides={"num_train": 2, "min_steps_per_epoch": 20})  # short runs: the sweep is checked
    paths = run_sweep(setup, cfg, grid, baselines=False, progress=False)
    params, *records = json.loads(paths["results"].read_text())
    assert params["strategy"] == "bitfit" and paths["results"].name == "results_regular_bitfit.json"
    assert sorted(r["sampled_cut_point"] for r in records) == [5, 6]
    assert all(r["trainable_params"] > 0 and 0 <= r["test_acc"] <= 1 for r in records)
    again = []
    run_sweep(setup, cfg, grid, baselines=False, progress=False, on_run=again.append)
    assert again == []


def test_one_predict_and_one_evaluate_score_stage_outputs_images_and_ten_crops(source, monkeypatch):
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    tuner = Finetuner(backbone, 5, freeze_layers=backbone.layer_names, pooling="avg", seed=0)
    _, _, test = toy_splits(seed=2)
    (probabilities,) = predict(tuner.net, test.x, start=0)
    scores = tuner.evaluate(test, inputs_at=0)
    predicted, y = probabilities.argmax(1), test.y.numpy()
    assert probabilities.shape == (30, 5) and np.allclose(probabilities.sum(1), 1, atol=1e-6)
    top4 = np.mean([label in np.argsort(row)[-4:] for row, label in zip(probabilities, y)])
    f1 = np.mean([2 * np.sum((predicted == c) & (y == c)) / max(np.sum(predicted == c) + np.sum(y == c), 1)
                  for c in range(5)])
    assert scores == {"test_acc": pytest.approx(np.mean(predicted == y)),
                      "test_mean_class_acc": pytest.approx(balanced_accuracy_score(y, predicted)),
                      "test_top4_acc": pytest.approx(top4), "test_macro_f1": pytest.approx(f1)}
    monkeypatch.setitem(device.FORWARD_CHUNK, "cpu", 7)  # chunks of another size: the same outputs
    np.testing.assert_allclose(predict(tuner.net, test.x, start=0)[0], probabilities, rtol=1e-6, atol=1e-7)
    images = Split((test.x - test.x.min()) / (test.x.max() - test.x.min()), test.y)
    crops = evaluate(tuner.net, images, crops=True)
    assert len(predict(tuner.net, images.x, crops=True)) == 10
    assert set(crops) == {"test_acc", "test_mean_class_acc", "test_prob_acc", "test_prob_mean_class_acc"}
    with pytest.raises(DataError, match="ten crops are cut from images"):
        predict(tuner.net, test.x, crops=True, start=0)


def test_model_checkpoint_keeps_the_best_over_several_fits_and_writes_it(source, tmp_path):
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    tuner = Finetuner(backbone, 5, freeze_layers=backbone.layer_names[:4], pooling="flatten", seed=0)
    train, val, _ = toy_splits()
    checkpoint = ModelCheckpoint(tmp_path / "best.pt")
    for seed in range(2):
        tuner.fit(train, val, epochs=2, batch_size=8, callbacks=[checkpoint, EarlyStopping(1)], seed=seed, inputs_at=0)
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    for name, tensor in tuner.net.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    assert checkpoint.best_val >= 0


def test_feature_extractor_caches_on_the_feature_store_and_shapes_its_output(tmp_path):
    model = load_pretrained_model("MNIST", pooling="avg")
    images = torch.rand(12, 1, 28, 28)
    direct = FeatureExtractor(model, layers=["block2", "block6"])(images)
    cached = FeatureExtractor(model, layers=["block2", "block6"]).cache_features(
        images, data={"test": "random"}, cache_dir=tmp_path)
    np.testing.assert_allclose(cached, direct, rtol=1e-6)
    assert direct.shape == (12, 32) and len(list(tmp_path.glob("*.npz"))) == 1
    maps = FeatureExtractor(model, layers=["block1"], pooling=None, flatten=False, normalize=True)(images)
    assert maps["block1"].shape == (12, 16, 28, 28)
    np.testing.assert_allclose(np.linalg.norm(maps["block1"].reshape(12, -1), axis=1), 1.0, rtol=1e-5)
    with pytest.raises(DataError, match="unknown network 'resnet18'"):
        load_pretrained_model("resnet18")
    with pytest.raises(DataError, match="pooling='mean'"):
        load_pretrained_model("MNIST", pooling="mean")
    assert load_pretrained_model("MNIST", include_top=True).fc.out_features == 5


def test_every_strategy_is_a_mode_of_the_command_line(capsys):
    from functions.__main__ import main
    assert main(["run", "MNIST", "--mode", "lora_rx"]) == 2
    assert "unknown mode 'lora_rx'" in capsys.readouterr().err
    assert set(STRATEGIES) == {"progressive", "discriminative", "lora", "ia3", "bitfit", "source_only", "adabn",
                               "dann", "coral", "distill", "l2sp", "delta", "bss", "mcc", "cdan"}


def test_weight_space_lora_equals_peft_lora_in_outputs_and_gradients():
    """The one-convolution LoRA computes peft's two-branch LoRA: same outputs, same gradients, also
    through a convolution that pads in its own forward (timm's "same" padding, as in EfficientNet)."""
    from peft import LoraConfig, get_peft_model
    from timm.layers import Conv2dSame
    from functions.models.adapters import weight_space_lora

    def adapted(weight_space: bool):
        torch.manual_seed(0)
        net = torch.nn.Sequential(Conv2dSame(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
        config = LoraConfig(target_modules=["0", "2"], r=2, lora_alpha=4)
        model = get_peft_model(net, weight_space_lora(config) if weight_space else config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.linspace(-1, 1, p.numel()).view_as(p))
        return model

    x = torch.randn(5, 3, 10, 10)
    outputs, grads = [], []
    for weight_space in (False, True):
        model = adapted(weight_space)
        out = model(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 4
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-4)


def test_finetuner_refuses_bad_settings_naming_the_fix(source):
    backbone = create_backbone(STUDY, source, mean=0.0, std=1.0)
    with pytest.raises(DataError, match="num_classes=1 must be at least 2"):
        Finetuner(backbone, 1)
    with pytest.raises(DataError, match="optimizer='rmsprop' is unknown; choose one of \\['adam', 'sgd'\\]"):
        Finetuner(backbone, 5, optimizer="rmsprop")
    with pytest.raises(DataError, match="unknown layer\\(s\\) \\['fc'\\].*'classifier'"):
        Finetuner(backbone, 5, layer_learning_rates={"fc": 1e-3})
    with pytest.raises(DataError, match="must all be positive"):
        Finetuner(backbone, 5, layer_learning_rates={"classifier": 0.0})
    with pytest.raises(DataError, match="unknown pooling 'sum'"):
        Finetuner(backbone, 5, pooling="sum")
    tuner = Finetuner(backbone, 5, freeze_layers=["block1"])
    train, val, _ = toy_splits()
    with pytest.raises(DataError, match="inputs enter at stage 3, but only the first 1 stages are frozen"):
        tuner.fit(train, val, epochs=1, inputs_at=3)
    with pytest.raises(DataError, match="epochs=0"):
        tuner.fit(train, val, epochs=0)
    with pytest.raises(DataError, match="lr=0.0 must be positive"):
        Finetuner(backbone, 5, lr=0.0)


def test_strategy_analysis_finds_the_better_strategy_and_the_cheapest_point():
    from functions.analysis import strategies as analysis
    from functions.analysis.stats import shown_tests
    rng = np.random.default_rng(0)

    def runs(mode_gain, params=None):
        out = []
        for cut in (1, 2):
            for repeat in range(8):
                accuracy = 0.8 + 0.01 * cut + mode_gain + rng.normal(0, 0.002)
                # validation prefers cut 1, the test split cut 2: the cut is chosen on validation
                record = {"sampled_percentage": 0.01, "sampled_cut_point": cut, "repeat": repeat, "epochs": 5,
                          "seconds": 1.0, "test_acc": accuracy, "val_acc": accuracy - 0.03 * cut, "train_acc": 1.0}
                if params is not None:
                    record["trainable_params"] = params[cut]
                out.append(record)
        return out

    records = {"FR": runs(0.0), "bitfit": runs(0.05, {1: 300, 2: 100})}
    baselines = [{"sampled_percentage": 0.01, "sampled_cut_point": -1, "repeat": r, "test_acc": 0.5, "train_acc": 1}
                 for r in range(8)]
    frame = analysis.strategy_frame(records, {"FR": {1: 1000, 2: 500}})
    best = analysis.best_cuts(frame, baselines)
    assert best.loc[(0.01, "bitfit"), "best_cut"] == 1 and best.loc[(0.01, "FR"), "trainable_params"] == 1000
    assert best.loc[(0.01, "FR"), "gain_over_baseline"] == pytest.approx(0.31, abs=0.01)
    tests = analysis.against_reference(frame, best)
    assert len(tests) == 1 and tests["significant"].all() and tests["gain"].iloc[0] == pytest.approx(0.05, abs=0.005)
    assert tests["ci95_low"].iloc[0] > 0.04 and tests["repeats_for_power"].iloc[0] == 6  # one test: 6 can reach p < 0.05
    text = analysis.verdict(frame, best, tests)
    assert "bitfit scores best (cut 1" in text and "bitfit at cut 2 (100 against FR's 1,000)" in text
    assert "1 of 1 strategies are significantly better" in text
    few = analysis.against_reference(frame[frame["repeat"] < 2], best)
    assert "With 2 repeats no strategy can differ significantly from FR" in analysis.verdict(frame, best, few)
    assert "p_holm" in shown_tests(tests) and "p_holm" not in shown_tests(few)
    assert {"gain", "ci95_low", "ci95_high", "repeats_for_power"} <= set(shown_tests(few).columns)
    with pytest.raises(DataError, match="compared with FR"):
        analysis.strategy_frame({"bitfit": records["bitfit"]}, {})
    # against another reference (F on a backbone), sizes named in words; a strategy worse than the
    # reference everywhere leaves the reference as the cheapest way to its accuracy
    worse = {"F": runs(0.0, {1: 1000, 2: 500}), "ia3": runs(-0.05, {1: 2000, 2: 900})}
    frame = analysis.strategy_frame(worse, {}, reference="F")
    best = analysis.best_cuts(frame, baselines)
    text = analysis.verdict(frame, best, analysis.against_reference(frame, best, reference="F"), reference="F",
                            size_names={0.01: "5 images per class"})
    assert text.startswith("5 images per class, each mode at the cut its validation accuracy picks: F scores best")
    assert "No strategy reaches F's accuracy with fewer trainable parameters than F at cut 2 (500)" in text
    assert "1 significantly worse" in text


def test_a_cut_run_to_more_repeats_is_picked_on_the_seeds_every_cut_has():
    from functions.analysis import stats
    # cut 1 leads on repeats 0 and 1, which both cuts have; cut 2's extra repeats 2-7 would lift its
    # mean above cut 1's, but a cut is not picked for having been run more often
    rows = [(1, 0, 0.90), (1, 1, 0.90), (2, 0, 0.89), (2, 1, 0.89), *((2, r, 0.99) for r in range(2, 8))]
    frame = pd.DataFrame([{"sampled_percentage": 0.01, "mode": "FR", "sampled_cut_point": c, "repeat": r,
                           "val_acc": v} for c, r, v in rows])
    assert stats.chosen_cuts(frame, by=("sampled_percentage", "mode")).to_dict() == {(0.01, "FR"): 1}
    assert stats.chosen_cuts(frame).to_dict() == {0.01: 1}
    with pytest.raises(DataError, match="no repeat was run at every cut point"):
        stats.chosen_cuts(frame[~((frame["sampled_cut_point"] == 1) & (frame["repeat"] == 0))
                                   & ~((frame["sampled_cut_point"] == 2) & (frame["repeat"] == 1))])
