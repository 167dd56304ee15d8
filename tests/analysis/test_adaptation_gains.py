import numpy as np
import pandas as pd
import pytest

from functions.analysis import adaptation


def runs(accuracies: dict, cut: int) -> list[dict]:
    """``{fraction: [test accuracy per repeat]}`` at ``cut``."""
    return [{"sampled_percentage": p, "sampled_cut_point": cut, "repeat": r, "test_acc": a, "status": "ok"}
            for p, values in accuracies.items() for r, a in enumerate(values)]


def test_each_method_is_paired_with_source_only_by_repeat_and_tested_within_its_fraction():
    steady = [0.70 + 0.001 * r for r in range(8)]
    noisy = [0.45, 0.55, 0.30, 0.70, 0.40, 0.60, 0.35, 0.65]
    methods = {"source_only": runs({0.01: [0.5] * 8, 0.05: [0.5] * 2}, 0),
               "adabn": runs({0.01: steady, 0.05: steady[:2]}, 6) + runs({0.01: [0.0] * 8}, 3),
               "dann": runs({0.01: noisy, 0.05: noisy[:2]}, 6) + runs({0.01: [1.0] * 8}, 2)}
    table = adaptation.against_source_only(methods, headline_cut=6)
    first = table[table["target fraction (unlabelled)"] == 0.01].set_index("method")
    assert first.loc["AdaBN", "gain"] == pytest.approx(0.2035) and first.loc["AdaBN", "significant"]
    assert first.loc["AdaBN", "p_holm"] == pytest.approx(2 * 2 / 2 ** 8)  # the smallest of a family of 2
    assert first.loc["DANN", "gain"] == pytest.approx(0.0) and not first.loc["DANN", "significant"]
    assert first.loc["DANN", "spread exceeds gain"] and not first.loc["AdaBN", "spread exceeds gain"]
    text = adaptation.adaptation_verdict(table)
    lines = text.splitlines()
    assert lines[0].startswith("1% of the target images, unlabelled, n = 8") and "AdaBN +0.203" in lines[0]
    assert "significant (Holm p = 0.0156)" in lines[0] and "DANN +0.000" in lines[0]
    assert "within its own spread over seeds" in lines[0]
    assert "With 2 repeats no method can differ significantly" in lines[1] and "7 repeats could" in lines[1]


def distill_runs(accuracies: dict, cut: int, validation: float, chosen=(4.0, 0.9)) -> list[dict]:
    """Distilled runs at ``cut`` with one validation accuracy, each having chosen ``chosen``
    (temperature, share) out of the four candidates."""
    candidates = {f"val_acc_t{t:g}_a{a:g}": 0.5 for t in (2.0, 4.0) for a in (0.5, 0.9)}
    return [{**run, "val_acc": validation, "chosen_temperature": chosen[0], "chosen_alpha": chosen[1], **candidates}
            for run in runs(accuracies, cut)]


def test_the_distilled_student_is_paired_with_the_student_alone_each_at_its_chosen_cut():
    alone = [0.70 + 0.001 * r for r in range(8)]
    better = [a + 0.02 + 0.001 * (r % 3) for r, a in enumerate(alone)]
    # the distilled student's validation picks cut 2 (test accuracy 0.0 at cut 1 is never read);
    # FR's picks cut 1, whose runs are better on validation though worse on test than cut 3
    distilled = distill_runs({0.01: better, 0.05: alone[:2]}, 2, 0.9) + \
        distill_runs({0.01: [0.0] * 8, 0.05: [0.0] * 2}, 1, 0.8, chosen=(2.0, 0.5))
    fr = [{**r, "val_acc": 0.9} for r in runs({0.01: alone, 0.05: alone[:2]}, 1)] + \
        [{**r, "val_acc": 0.8} for r in runs({0.01: [1.0] * 8, 0.05: [1.0] * 2}, 3)]
    table = adaptation.distillation_against_alone(distilled, fr).set_index("fraction")
    assert list(table.loc[0.01, ["cut", "alone cut", "n"]]) == [2, 1, 8]
    assert table.loc[0.01, "gain"] == pytest.approx(0.02 + 0.001 * sum(r % 3 for r in range(8)) / 8)
    assert table.loc[0.01, "ci95_low"] > 0.02 and table.loc[0.01, "significant"]
    assert table.loc[0.01, "p_holm"] == pytest.approx(2 * 2 / 2 ** 8)  # Holm over the two fractions
    assert table.loc[0.05, "gain"] == pytest.approx(0.0) and not table.loc[0.05, "detectable"]
    lines = adaptation.distillation_verdict(table.reset_index()).splitlines()
    assert lines[0].startswith("1% of the target images, labelled, n = 8 paired repeats: distilled minus alone +0.")
    assert "significant (Holm p = 0.0156 over 2 fractions)" in lines[0] and "(cuts 2 and 1; 95% CI +0.0" in lines[0]
    assert "2 repeats are too few for an interval or a test" in lines[1] and "7 could" in lines[1]
    assert "CI" not in lines[1]
    settings = adaptation.chosen_distillation_settings(distilled)
    assert list(settings.columns) == ["T 2, share 0.5", "T 2, share 0.9", "T 4, share 0.5", "T 4, share 0.9"]
    assert settings.loc[0.01].tolist() == [8, 0, 0, 8] and settings.loc[0.05].tolist() == [2, 0, 0, 2]


def test_the_settings_chosen_without_labels_are_counted_with_every_candidate_tried():
    def run(percentage, weight, lr, schedule):
        risks = {f"dev_risk_{w:g}_lr{r:g}_{s}": 0.5 for w in (0.3, 1.0) for r in (3e-4, 1e-3) for s in ("ramp", "constant")}
        return {"sampled_percentage": percentage, "sampled_cut_point": 6, "status": "ok", "test_acc": 0.5,
                "chosen_weight": weight, "chosen_lr": lr, "chosen_schedule": schedule, **risks}
    dann = [run(0.01, 0.3, 1e-3, "constant"), run(0.01, 0.3, 3e-4, "constant"), run(0.05, 1.0, 1e-3, "ramp")]
    coral = [{"sampled_percentage": 0.01, "status": "ok", "test_acc": 0.4, "chosen_weight": 10.0,
              "dev_risk_1": 0.2, "dev_risk_10": 0.1}]
    source = [{"sampled_percentage": 0.01, "status": "ok", "test_acc": 0.3}]
    table = adaptation.chosen_alignment_settings({"source_only": source, "dann-tuned": dann, "coral": coral})
    assert list(table.columns) == ["weight", "rate", "schedule"]
    row = table.loc[("DANN, rate and schedule chosen", 0.01)]
    assert (row["weight"], row["rate"], row["schedule"]) == ("0.3 x2, 1 x0", "0.0003 x1, 0.001 x1", "ramp x0, constant x2")
    assert table.loc[("DANN, rate and schedule chosen", 0.05), "weight"] == "0.3 x0, 1 x1"
    assert tuple(table.loc[("CORAL", 0.01)]) == ("1 x0, 10 x1", "", "")  # it chose its weight alone


def test_methods_at_one_rate_and_those_that_chose_theirs_are_two_families_each_holm_corrected_alone():
    steady = [0.70 + 0.001 * r for r in range(8)]
    methods = {"source_only": runs({0.01: [0.5] * 8}, 0),
               **{m: runs({0.01: steady}, 6) for m in ("adabn", "dann", "coral", "mcc", "cdan")},
               **{f"{m}-tuned": runs({0.01: steady}, 6) for m in ("dann", "coral", "mcc", "cdan")}}
    table = adaptation.against_source_only(methods, headline_cut=6).set_index("method")
    assert (table["family"] == "one learning rate").sum() == 5 and (table["family"] == "learning rate chosen").sum() == 4
    assert table.loc["MCC", "p_holm"] == pytest.approx(5 * 2 / 2 ** 8)  # over the 5, not the 9
    assert table.loc["CDAN, rate chosen", "p_holm"] == pytest.approx(4 * 2 / 2 ** 8)
    assert table["significant"].all()
    lines = adaptation.adaptation_verdict(table.reset_index()).splitlines()
    assert len(lines) == 2 and "(one learning rate)" in lines[0] and "(learning rate chosen)" in lines[1]


def test_each_label_free_way_of_choosing_is_judged_afterwards_against_a_random_and_the_best_candidate():
    def run(accuracies, risks, source_val, repeat):
        """One run of two weights: its candidates' test accuracies, risks and source validation
        accuracies; it chose the lower risk."""
        chosen = min(range(2), key=lambda i: risks[i])
        return {"sampled_percentage": 1.0, "repeat": repeat, "status": "ok", "test_acc": accuracies[chosen],
                **{f"{what}_{w:g}": v for what, values in (("test_acc", accuracies), ("dev_risk", risks),
                                                           ("source_val_acc", source_val))
                   for w, v in zip((1.0, 10.0), values)}}
    # the risk ranks the candidates as the test labels do in every run; the source accuracy ties
    good = [run((0.6 + 0.01 * r, 0.5), (0.1, 0.9), (0.7, 0.7), r) for r in range(8)]
    # the risk ranks them the wrong way round; the source accuracy the right way
    bad = [run((0.6, 0.5 + 0.01 * r), (0.9, 0.1), (0.8, 0.7), r) for r in range(8)]
    quality = adaptation.selection_quality({"coral-tuned": good, "mcc-tuned": bad, "cdan-tuned": [],
                                            "source_only": [{"status": "ok", "test_acc": 0.5}]})
    dev, by_source = "deep embedded validation", "source validation accuracy"
    assert list(quality.index) == [("CORAL, rate chosen", dev), ("CORAL, rate chosen", by_source),
                                   ("MCC, rate chosen", dev), ("MCC, rate chosen", by_source)]
    coral = quality.loc[("CORAL, rate chosen", dev)]
    assert coral["picked"] == pytest.approx(0.635) and coral["at random"] == pytest.approx(0.5675)
    assert coral["gain"] == pytest.approx(0.0675) and coral["ci95_low"] > 0 and coral["p"] == pytest.approx(2 / 2 ** 8)
    assert coral["best in hindsight"] == coral["picked"] and coral["picked the best"] == 1.0
    assert coral["spearman"] == pytest.approx(1.0) and coral["candidates"] == 2 and coral["n"] == 8
    tied = quality.loc[("CORAL, rate chosen", by_source)]  # a tie is a random pick: no gain, never the best
    assert tied["picked"] == pytest.approx(tied["at random"]) and tied["gain"] == pytest.approx(0.0)
    assert tied["picked the best"] == 0.0 and np.isnan(tied["spearman"])  # no ranking to compare
    mcc, mcc_by_source = quality.loc[("MCC, rate chosen", dev)], quality.loc[("MCC, rate chosen", by_source)]
    assert mcc["picked the best"] == 0.0 and mcc["spearman"] == pytest.approx(-1.0) and mcc["ci95_high"] < 0
    assert mcc["picked"] == pytest.approx(float(np.mean([r["test_acc"] for r in bad])))  # what the runs chose
    assert mcc_by_source["picked"] == pytest.approx(0.6) and mcc_by_source["picked the best"] == 1.0
    lines = adaptation.selection_verdict(quality).splitlines()
    assert lines[0].startswith("CORAL, rate chosen, by deep embedded validation: 0.635, +0.06")
    assert "better than a candidate picked at random" in lines[0] and "+1.00" in lines[0]
    assert "no better than a candidate picked at random" in lines[1]
    assert "worse than a candidate picked at random" in lines[2]
    assert adaptation.selection_quality({"coral": [{"status": "ok", "test_acc": 0.5, "dev_risk_1": 0.1}]}).empty
    assert "no choice can be judged" in adaptation.selection_verdict(pd.DataFrame())
