"""The feature-extraction or fine-tuning figures: titles in words, log axes with readable ticks."""
import numpy as np

from functions.analysis import tradeoff


def records():
    return [{"pipeline": pipeline, "samples_per_class": n, "split": s, "test_acc": base + 0.01 * n + 0.001 * s,
             "test_mean_class_acc": base, "training_seconds": cost * n, "total_seconds": cost * n + 1.0,
             "training_energy_kwh": 1e-6 * n, "total_energy_kwh": 2e-6 * n, "training_flops": 1e9 * n,
             "total_flops": 2e9 * n}
            for pipeline, base, cost in (("FE", 0.5, 0.1), ("FT", 0.6, 1.5)) for n in (1, 5, 10) for s in range(3)]


def test_the_title_names_the_target_and_the_network_in_words():
    assert tradeoff.figure_title("MNIST/regular", "study") == \
        "MNIST/regular: feature extraction (FE) or fine-tuning (FT) of the folder's own source CNN"
    assert tradeoff.figure_title("clipart", "efficientnet_lite0").endswith("of efficientnet_lite0 (ImageNet weights)")


def test_log_axes_carry_plain_tick_labels_within_a_decade():
    figure = tradeoff.accuracy_curves(records(), title=tradeoff.figure_title("MNIST/regular", "study"))
    figure.canvas.draw()
    (ax,) = figure.axes
    shown = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    visible = [float(v) for v in shown if 1 <= float(v) <= 10]
    assert {1.0, 2.0, 5.0, 10.0} <= set(visible)  # 1, 2 and 5 of each decade, not the decade alone
    assert "source CNN" in figure._suptitle.get_text()
    cost = tradeoff.pareto(records())
    cost.canvas.draw()
    for ax in cost.axes:
        assert ax.get_xscale() == "log" and [t for t in ax.get_xticklabels() if t.get_text()]
    assert np.isfinite([line.get_xdata() for line in cost.axes[0].get_lines()][0]).all()
