import pandas as pd
import pytest

from functions.analysis import adaptation
from functions.runs.store import BASELINE_CUT


def records(accuracies: dict, cut: int, validation: float = 0.5) -> list[dict]:
    """Runs at ``cut``: ``{fraction: [test accuracy per repeat]}``, each with ``validation`` accuracy."""
    return [{"sampled_percentage": p, "sampled_cut_point": cut, "repeat": r, "test_acc": a, "val_acc": validation,
             "status": "ok"} for p, values in accuracies.items() for r, a in enumerate(values)]


def test_the_comparison_figure_draws_spread_chance_counts_and_a_title():
    # validation picks cut 3 at both fractions, although cut 1 tests better at 10%
    fr = records({0.01: [0.8, 0.9], 0.1: [0.95, 0.97]}, 3, 0.9) + records({0.01: [0.5, 0.6], 0.1: [0.99, 0.99]}, 1)
    baselines = records({0.01: [0.4, 0.6], 0.1: [0.9, 0.92]}, BASELINE_CUT)
    methods = {"source_only": records({0.01: [0.2, 0.2, 0.2]}, 0),
               "dann": records({0.01: [0.1, 0.5, 0.3], 0.1: [0.4, 0.5, 0.6]}, 4)}
    figure = adaptation.comparison_figure(methods, fr, baselines, headline_cut=4, num_classes=5, title="X: a title")
    ax = figure.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(labels) == sorted(["baseline (labelled, from scratch), n = 2", "FR, cut chosen on validation (labelled), n = 2",
                                     "source only (unlabelled, band ± std), n = 3", "DANN (unlabelled), n = 3", "chance (1 in 5)"])
    chance = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.2}
    # a method that saw one fraction is a level across the axis, where it meets the labelled curves
    (level,) = [line for line in ax.get_lines() if line.get_linestyle() == "--" and line.get_label().startswith("source")]
    assert list(level.get_ydata()) == pytest.approx([0.2, 0.2])
    fr_points = ax.containers[1]  # FR at the cut validation picks: cut 3 at both fractions
    assert list(fr_points.lines[0].get_ydata()) == pytest.approx([0.85, 0.96])
    dann_bar = ax.containers[2].lines[2][0].get_segments()[0]
    assert abs((dann_bar[1][1] - dann_bar[0][1]) / 2 - pd.Series([0.1, 0.5, 0.3]).std()) < 1e-12
    assert figure._suptitle.get_text() == "X: a title"
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] and ax.get_xscale() == "log"


def test_the_feature_picture_names_its_classes():
    points = pd.DataFrame({"x": [0, 1, 2, 3], "y": [0, 1, 0, 1], "model": ["a"] * 4,
                           "domain": ["source", "source", "target", "target"], "class": [0, 2, 0, 2]})
    figure = adaptation.embedding_figure(points, "features")
    (legend,) = figure.legends
    assert legend.get_title().get_text() == "class" and [t.get_text() for t in legend.get_texts()] == ["0", "2"]
