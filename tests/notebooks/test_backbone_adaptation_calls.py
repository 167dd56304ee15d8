"""The adaptation notebook's calls on a cut backbone: the summary per cut point and method, the
tests against source only, what the methods are worth in labelled images, and the re-check."""
import numpy as np
import pytest
from PIL import Image

from functions.notebooks import backbone, backbone_adaptation
from functions.runs.backbone_adaptation import AdaptationSettings
from functions.runs.backbone_study import CutStudySettings

SMALL = dict(input_size=32, max_epochs=2, patience=2, min_steps_per_epoch=2, batch_size=4)


@pytest.fixture(scope="module")
def adapted(module_paints):
    rng = np.random.default_rng(2)
    for label, colour in {"red": (240, 120, 120), "green": (120, 240, 120), "blue": (120, 120, 240)}.items():
        (module_paints.parent / "pales" / label).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(module_paints.parent / "pales" / label / f"{i}.png")
    pales = module_paints.parent / "pales"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(backbone_adaptation, "AdaptationSettings",
                            lambda **given: AdaptationSettings(**{**SMALL, "adapt_epochs": 1, "adapt_min_steps": 2,
                                                                  **given}))
        monkeypatch.setattr(backbone, "CutStudySettings", lambda **given: CutStudySettings(**{**SMALL, **given}))
        study = backbone_adaptation.adaptation_study(module_paints, pales, "efficientnet_lite0",
                                                     ["source_only", "adabn", "dann", "coral"], "Both")
        labelled = backbone.studies(pales, "efficientnet_lite0", ["F"], "Both")["F"]
    study.run((7, 8), 3, progress=False)
    grid = backbone.grids({"F": labelled}, per_class=(1, 2), fractions=(1.0,), cut_points=(7, 9), repeats=2)["F"]
    labelled.run(grid, progress=False)
    return study, backbone_adaptation.records(study, (7, 8), 3), labelled, grid


def test_the_summary_and_the_tests_are_per_cut_point_and_method(adapted):
    study, runs, _, _ = adapted
    summary = backbone_adaptation.summary(study, runs)
    assert list(summary.index) == ["cut 7 (block6)", "cut 8 (block7)"]
    assert set(summary.columns) == {"source only", "AdaBN", "DANN", "CORAL"}
    assert all("(n=3)" in cell for cell in summary.to_numpy().ravel())
    gains = backbone_adaptation.against_source_only(runs)
    assert len(gains) == 6 and set(gains["cut"]) == {7, 8} and set(gains["n"]) == {3}
    # each method against the source model of the same cut point and repeat
    at_7 = {m: {r["repeat"]: r["test_acc"] for r in rs if r["sampled_cut_point"] == 7} for m, rs in runs.items()}
    dann = gains[(gains.cut == 7) & (gains.method == "DANN")].iloc[0]
    assert dann["gain"] == pytest.approx(np.mean([at_7["dann"][r] - at_7["source_only"][r] for r in range(3)]))
    verdict = backbone_adaptation.verdict(study, gains)
    assert verdict.splitlines()[0].startswith("cut 7 (block6): 100% of the target images, unlabelled, n = 3")
    assert "no method can differ significantly" in verdict  # 3 repeats cannot: the sentence says so


def test_what_the_unlabelled_images_are_worth_is_read_off_the_labelled_curve(adapted):
    study, runs, labelled, grid = adapted
    worth = backbone_adaptation.worth(study, runs, labelled, grid)
    assert len(worth) == 8 and set(worth["cut"]) == {7, 8}
    assert {"worth (F labelled fraction)", "worth (labelled images)"} <= set(worth.columns)
    assert all(cell[0] in "<=>" for cell in worth["worth (labelled images)"])
    figure = backbone_adaptation.worth_figure(study, runs, labelled, grid, 7, "Both: a title")
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith("F, cut chosen on validation (labelled)") for label in labels)
    assert any(label.startswith("DANN (unlabelled, band ± std), n = 3") for label in labels)


def test_source_only_and_adabn_come_out_of_the_code_again(adapted):
    study, _, _, _ = adapted
    table = backbone_adaptation.recheck_table(study, 8)
    assert list(table.index) == ["source only, cut 8 (block7), repeat 0", "AdaBN, cut 8 (block7), repeat 0"]
    assert list(table["trained again"]) == list(table["stored test accuracy"])
