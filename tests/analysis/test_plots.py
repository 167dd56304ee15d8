import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from functions.core.errors import DataError  # noqa: E402
from functions.analysis.plots import (CUT_LABEL, DODGE, FRACTION_LABEL, accuracy_boxplot, ari_boxplot, compare_modes,  # noqa: E402
                             gain_heatmap, gain_matrix, main_figure_from_files, mean_curves, save_figure,
                             train_vs_test)

PERCENTAGES = (0.01, 0.1)
CUTS = (0, 1, 2, 3)


def runs(cut, percentage, gain=0.0):
    """Three repeats; accuracy rises with the percentage and by ``gain`` over the baseline."""
    base = 0.7 + 0.1 * PERCENTAGES.index(percentage)
    return [{"sampled_percentage": percentage, "sampled_cut_point": cut, "repeat": r,
             "train_acc": min(1.0, base + gain + 0.1), "test_acc": base + gain + 0.01 * (r - 1)}
            for r in range(3)]


@pytest.fixture(scope="module")
def records():
    return [r for p in PERCENTAGES for c in CUTS for r in runs(c, p, gain=0.01 * c)]


@pytest.fixture(scope="module")
def baselines():
    return [r for p in PERCENTAGES for r in runs(-1, p)]


@pytest.fixture(scope="module")
def ari_records():
    return [{"model": model, "split": split, "layer": layer, "layer_index": i, "channel": channel,
             "sampled_percentage": p, "repeat": r, "ari": 0.1 * i + 0.01 * channel + 0.05 * r}
            for model in ("pretrained", "fine-tuned") for split in ("source", "target")
            for i, layer in enumerate(["input", "conv0", "conv1", "fc"])
            for channel in ([-1] if layer == "fc" else [-1, 0, 1]) for p in PERCENTAGES for r in range(2)]


def labelled(fig):
    assert isinstance(fig, Figure)
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel()
    return fig.axes


def test_boxplot_has_a_panel_per_percentage_with_the_baseline_first(records, baselines):
    axes = labelled(accuracy_boxplot(records, baselines))
    assert len(axes) == len(PERCENTAGES)
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["baseline", "0", "1", "2", "3"]
    assert axes[0].get_xlabel() == CUT_LABEL and axes[0].get_ylabel() == "test accuracy"
    assert FRACTION_LABEL in axes[1].get_title() and "0.1" in axes[1].get_title()


def test_a_cut_run_to_more_repeats_gets_a_box_and_the_others_keep_their_mean_line(records, baselines):
    more = [{**r, "repeat": r["repeat"] + 3 * k} for r in records if r["sampled_cut_point"] == 2
            and r["sampled_percentage"] == 0.01 for k in (0, 1)]  # cut 2 at 1%: 6 repeats
    axes = accuracy_boxplot([r for r in records if r not in more] + more, baselines).axes
    mean_lines = axes[0].collections[:-1]  # the hlines; the last collection is the runs' dots
    assert len(axes[0].patches) == 1 and len(mean_lines) == 4  # one box (seaborn: a patch); baseline, cuts 0, 1, 3
    assert "n = 3-6" in axes[0].get_title() and not axes[1].patches  # 3 repeats everywhere at 10%


def test_mean_curves_use_a_log_axis_and_one_line_per_cut(records, baselines):
    (ax,) = labelled(mean_curves(records, baselines))
    assert ax.get_xscale() == "log" and FRACTION_LABEL in ax.get_xlabel() and ax.get_ylabel() == "mean test accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.1"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline", "0", "1", "2", "3"]
    baseline_line = ax.get_lines()[0]
    np.testing.assert_allclose(baseline_line.get_ydata(), [0.7, 0.8])


def test_gain_heatmap_shows_mean_gain_over_the_baseline(records, baselines):
    gain = gain_matrix(records, baselines)
    np.testing.assert_allclose(gain.to_numpy(), [[0.01 * c] * len(PERCENTAGES) for c in CUTS], atol=1e-12)
    fig = gain_heatmap(records, baselines)
    ax = labelled(fig)[0]
    assert ax.get_xlabel() == FRACTION_LABEL and ax.get_ylabel() == CUT_LABEL
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(gain.shape), gain.to_numpy())
    assert "+0.030" in {t.get_text() for t in ax.texts}
    assert "over the baseline" in fig.axes[-1].get_ylabel()


def test_gain_needs_baselines(records):
    with pytest.raises(DataError, match="baseline"):
        gain_heatmap(records)


def test_train_versus_test_has_the_diagonal_and_a_legend(records, baselines):
    axes = labelled(train_vs_test(records, baselines))
    assert axes[0].get_xlabel() == "train accuracy" and axes[0].get_ylabel() == "test accuracy"
    assert any(line.get_label() == "train = test" for line in axes[0].get_lines())
    assert axes[-1].get_legend().get_title().get_text() == CUT_LABEL


def test_modes_share_one_figure_with_the_baseline(records, baselines):
    shifted = [{**r, "test_acc": r["test_acc"] - 0.05} for r in records]
    figure = compare_modes({"F": records, "FR": shifted, "FT": records}, baselines, title="MNIST, quick")
    axes = labelled(figure)
    assert len(axes) == len(PERCENTAGES) and figure._suptitle.get_text() == "MNIST, quick"
    (legend,) = figure.legends  # outside the panels, not over the data
    assert [t.get_text() for t in legend.get_texts()] == ["F", "FR", "FT", "baseline"]
    f_line, _, ft_line = axes[0].get_lines()[:3]
    np.testing.assert_allclose(f_line.get_xdata(), np.array(CUTS) - DODGE)  # F and FT are equal: shifted apart
    np.testing.assert_allclose(ft_line.get_xdata(), np.array(CUTS) + DODGE)
    np.testing.assert_allclose(f_line.get_ydata(), [0.7 + 0.01 * c for c in CUTS])
    assert f_line.get_marker() != ft_line.get_marker() and "n = " in axes[0].get_title()


def test_ari_boxplot_orders_layers_and_has_a_panel_per_model(ari_records):
    axes = labelled(ari_boxplot(ari_records, split="target"))
    assert [ax.get_title() for ax in axes] == ["pretrained, target data\n(pooled channels)",
                                               "fine-tuned, target data\n(pooled channels)"]
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["input", "conv0", "conv1", "fc"]
    assert axes[0].get_legend().get_title().get_text() == "fraction of target data"
    assert axes[0].get_ylabel() == "adjusted Rand index"


def test_ari_boxplot_summarises_channels(ari_records):
    axes = ari_boxplot(ari_records, split="source", channels="max").axes
    assert axes[0].get_title() == "pretrained, source data\n(max over channels)"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["input", "conv0", "conv1", "fc"]


def test_ari_boxplot_names_the_splits_it_has(ari_records):
    with pytest.raises(DataError, match="source"):
        ari_boxplot(ari_records, split="validation")


def test_save_writes_a_reproducible_png_under_results_figures(records, baselines, tmp_path):
    path = save_figure(accuracy_boxplot(records, baselines), tmp_path, "boxes")
    assert path == tmp_path / "results" / "figures" / "boxes.png"
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG") and b"Software" not in content
    again = save_figure(accuracy_boxplot(records, baselines), tmp_path, "boxes")
    assert again.read_bytes() == content
    assert not list(path.parent.glob("*.tmp"))


def test_main_figure_from_results_files(records, baselines, tmp_path, monkeypatch):
    from functions.config import get_setup
    from functions.core import atomic
    from functions.runs import store

    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    setup = get_setup("MNIST", "regular")
    with pytest.raises(DataError, match="python -m functions run MNIST"):
        main_figure_from_files(setup, "FR")
    atomic.write_json_atomic(store.results_path("MNIST", "results", "regular", "FR"), [{}, *records])
    atomic.write_json_atomic(store.results_path("MNIST", "baselines", "regular"), [{}, *baselines])
    path = main_figure_from_files(setup, "FR")
    assert path == tmp_path / "MNIST" / "results" / "figures" / "test_accuracy_regular_FR.png"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_figures_of_another_profile_go_beside_its_results(records, baselines, tmp_path, monkeypatch):
    """A range figure must not overwrite the quick figure of the same name (nor the reverse)."""
    from functions.config import get_setup
    from functions.core import atomic
    from functions.runs import store

    monkeypatch.setenv("TRANSFER_OUTPUT_ROOT", str(tmp_path))
    setup = get_setup("MNIST", "regular")
    for profile in ("quick", "range"):
        atomic.write_json_atomic(store.results_path("MNIST", "results", "regular", "FR", profile), [{}, *records])
    quick = main_figure_from_files(setup, "FR")
    ranged = main_figure_from_files(setup, "FR", "range")
    assert ranged == tmp_path / "MNIST" / "results" / "range" / "figures" / "test_accuracy_regular_FR.png"
    assert quick != ranged and quick.exists() and ranged.exists()


def test_the_ari_profile_draws_one_line_per_model_over_the_layers_in_order():
    import pandas as pd
    table = pd.DataFrame([[0.1, 0.2, 0.3], [0.1, 0.2, 0.6]], index=["pretrained", "fine-tuned"],
                         columns=["input", "stem", "fc"])
    from functions.analysis.plots import ari_profile
    figure = ari_profile(table, "X: a title")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["input", "stem", "fc"]
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[0.1, 0.2, 0.3], [0.1, 0.2, 0.6]]
    assert ax.get_legend_handles_labels()[1] == ["pretrained", "fine-tuned"]
