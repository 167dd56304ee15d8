"""Scores against measured sweeps: rank agreement, refused records, the plot."""
import numpy as np
import pandas as pd
import pytest
from functions.core.errors import DataError
from functions.analysis.transferability import leep, plot_score_vs_accuracy, validate_against_sweeps
from score_references import hand_made_records


def test_validation_gives_tau_one_for_a_score_monotone_in_accuracy():
    records = hand_made_records({0.1: [0.5, 0.6, 0.7, 0.8], 0.01: [0.8, 0.7, 0.6, 0.65]})
    scores = pd.DataFrame({"cut_point": [0, 1, 2, 3], "logme_flat": [-1.0, -0.5, 0.0, 0.2],
                           "leep": [-0.3] * 4})
    table = validate_against_sweeps(scores, records, tolerance={0.01: {0, 3}}).set_index(["percentage", "score"])
    assert table.loc[(0.1, "logme_flat"), "kendall_tau"] == pytest.approx(1.0)
    assert table.loc[(0.1, "logme_flat"), "spearman_rho"] == pytest.approx(1.0)
    assert table.loc[(0.1, "logme_flat"), "top_cut_ok"]
    # at 1% the best cut is 0 but cut 3 (the score's top) is within the tolerance group
    assert table.loc[(0.01, "logme_flat"), "best_cut"] == 0
    assert table.loc[(0.01, "logme_flat"), "top_cut_ok"]
    assert table.loc[(0.01, "logme_flat"), "kendall_tau"] < 0
    # a score constant over cuts has neither a correlation nor a top cut
    assert np.isnan(table.loc[(0.1, "leep"), "kendall_tau"]) and not table.loc[(0.1, "leep"), "top_cut_ok"]


def test_validation_rejects_records_without_the_needed_keys():
    with pytest.raises(DataError, match="sampled_cut_point"):
        validate_against_sweeps(pd.DataFrame({"cut_point": [0]}), [{"sampled_percentage": 0.1, "test_acc": 0.5}])


def test_plot_saves_a_labelled_png(tmp_path):
    records = hand_made_records({0.1: [0.5, 0.6, 0.7], 0.01: [0.6, 0.5, 0.4]})
    scores = pd.DataFrame({"cut_point": [0, 1, 2], "hscore_gap": [1.0, 2.0, 3.0]})
    fig = plot_score_vs_accuracy(scores, records, score="hscore_gap", path=tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "mean test accuracy"
    assert "Software" not in (tmp_path / "fig.png").read_bytes()[:400].decode("latin1")
