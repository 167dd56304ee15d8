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
