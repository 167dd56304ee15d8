import numpy as np
import pandas as pd
import pytest

from functions.analysis import strategies
from functions.core.errors import DataError


def _records(mode_accuracies: dict, cut: int = 2, chosen_lrs=None) -> dict:
    """Records of one cut per mode at 1%: repeat r has test accuracy accuracies[r] and a
    validation accuracy 0.01 below it."""
    return {mode: [{"sampled_percentage": 0.01, "sampled_cut_point": cut, "repeat": r, "test_acc": a,
                    "val_acc": a - 0.01, "epochs": 5, "seconds": 1.0, "trainable_params": 100 * (i + 1),
                    **({"chosen_lr": chosen_lrs[r], **{f"val_acc_lr{lr:g}": a for lr in (0.0003, 0.001, 0.003, 0.01)}}
                       if chosen_lrs else {})} for r, a in enumerate(accuracies)]
            for i, (mode, accuracies) in enumerate(mode_accuracies.items())}


BASELINES = [{"sampled_percentage": 0.01, "sampled_cut_point": -1, "repeat": r, "test_acc": 0.5} for r in range(8)]


def test_a_strategy_whose_gain_is_smaller_than_its_spread_is_reported_as_noise():
    rng = np.random.default_rng(0)
    reference = 0.80 + rng.normal(0, 0.01, 8)
    steady = reference + 0.05  # always 0.05 better: beyond its spread (0)
    noisy = reference + np.array([0.06, -0.05, 0.07, -0.06, 0.05, -0.04, 0.06, -0.05])  # +0.005 on average
    records = _records({"FR-tuned": reference, "steady-tuned": steady, "noisy-tuned": noisy})
    frame = strategies.strategy_frame(records, {}, reference="FR-tuned")
    best = strategies.best_cuts(frame, BASELINES)
    tests = strategies.against_reference(frame, best, reference="FR-tuned")
    spread = strategies.spread_against_gain(frame, tests, reference="FR-tuned")
    assert not spread.loc[(0.01, "steady-tuned"), "within_spread"]
    assert spread.loc[(0.01, "noisy-tuned"), "within_spread"]
    assert spread.loc[(0.01, "noisy-tuned"), "std_of_differences"] == pytest.approx(np.std(noisy - reference, ddof=1))
    line = strategies.spread_verdict(spread, reference="FR-tuned")
    assert "1 of 2 strategies" in line and "noisy-tuned +0.005" in line and "Beyond their spread: steady-tuned +0.050" in line


def test_chosen_rates_count_the_runs_per_learning_rate_and_need_tuned_runs():
    lrs = [0.001, 0.003, 0.003, 0.0003]
    table = strategies.chosen_rates(_records({"FR-tuned": [0.8] * 4, "ia3-tuned": [0.9] * 4}, chosen_lrs=lrs))
    assert list(table.index) == ["FR-tuned", "ia3-tuned"]
    assert list(table.columns) == ["0.0003", "0.001", "0.003", "0.01"]  # a rate no run chose counts 0
    assert table.loc["ia3-tuned"].tolist() == [1, 1, 2, 0]
    with pytest.raises(DataError, match="chose a learning rate"):
        strategies.chosen_rates(_records({"FR": [0.8] * 4}))


def test_lora_rank_is_the_one_with_the_best_validation_accuracy_not_the_best_test_and_alone_is_tuned():
    best = pd.DataFrame({"val_acc": [0.95, 0.90, 0.95, 0.92], "test_acc": [0.90, 0.99, 0.91, 0.93]},
                        index=pd.MultiIndex.from_tuples([(0.01, "FR"), (0.01, "lora_r1"), (0.01, "lora_r4"),
                                                         (0.01, "ia3")], names=["sampled_percentage", "mode"]))
    assert strategies.chosen_lora_modes(best) == {0.01: "lora_r4"}
    assert strategies.modes_to_tune(best) == ["FR", "lora_r4", "ia3"]
    line = strategies.chosen_lora_rank(best)
    assert line.startswith("1% of the data: LoRA's rank chosen on validation is 4") and "other ranks 1: 0.9000" in line
    one_rank = best.drop(index=(0.01, "lora_r1"))  # nothing to choose: every mode is tuned, nothing said
    assert strategies.chosen_lora_rank(one_rank) == "" and strategies.modes_to_tune(one_rank) == ["FR", "lora_r4", "ia3"]


def test_f_and_its_regularisers_are_tuned_apart_from_the_strategies_compared_with_fr():
    modes = {m: [0.8] * 2 for m in ("FR", "F", "progressive", "ia3", "l2sp", "delta", "bss")}
    frame = strategies.strategy_frame(_records(modes), {}, reference="FR")
    best = strategies.best_cuts(frame, BASELINES)
    assert strategies.regularised_modes(best) == ["F", "l2sp", "delta", "bss"]
    assert strategies.modes_to_tune(best) == ["FR", "progressive", "ia3"]
    rng = np.random.default_rng(1)
    base = 0.8 + rng.normal(0, 0.01, 8)
    tuned = {"F-tuned": base, "l2sp-tuned": base + 0.02, "delta-tuned": base + 0.01, "bss-tuned": base}
    tuned_frame = strategies.strategy_frame(_records(tuned), {}, reference="F-tuned")
    tests = strategies.against_reference(tuned_frame, strategies.best_cuts(tuned_frame, BASELINES),
                                         reference="F-tuned").set_index("mode")
    assert tests.loc["l2sp-tuned", "gain"] == pytest.approx(0.02) and len(tests) == 3
    assert tests["smallest_p_holm"].iloc[0] == pytest.approx(3 * 2 / 2 ** 8)  # Holm over the three regularisers


def test_chosen_weights_are_counted_like_chosen_rates():
    records = {"l2sp-tuned": [{"chosen_weight": w, "val_acc_weight0.01": 0.5, "val_acc_weight0.1": 0.6}
                              for w in (0.1, 0.1, 0.01)]}
    table = strategies.chosen_rates(records, "weight")
    assert list(table.columns) == ["0.01", "0.1"] and table.loc["l2sp-tuned"].tolist() == [1, 2]
