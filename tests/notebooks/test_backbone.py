"""The cut-point notebooks' calls: sizes named, the summary and gains per size, the cut validation
picks, a stored run trained again, and the figure's panels titled by size."""
import pytest

from functions.analysis import plots
from functions.notebooks import backbone
from functions.runs.backbone_study import CutStudySettings, Size

SMALL = dict(input_size=32, max_epochs=2, patience=2, min_steps_per_epoch=2, batch_size=4)


@pytest.fixture(scope="module")
def studies(module_paints):
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(backbone, "CutStudySettings", lambda **given: CutStudySettings(**{**SMALL, **given}))
        studies = backbone.studies(module_paints, "efficientnet_lite0", ["F", "FT"])
    grids = backbone.grids(studies, per_class=(1, 2), fractions=(1.0,), cut_points=(7, 9), repeats=(3, 3, 2))
    for mode, study in studies.items():
        study.run(grids[mode], progress=False)
    return studies, grids


def test_the_tables_name_each_size_and_stage(studies):
    studies, grids = studies
    f = studies["F"]
    sizes = backbone.sizes_table(f, grids["F"])
    assert list(sizes.index) == ["1 / class", "2 / class", "all"]
    assert list(sizes["training images"]) == [3, 6, len(f.task.train)]
    summary = backbone.summary(f, grids["F"])
    assert list(summary.columns) == ["1 / class", "2 / class", "all"]
    assert list(summary.index) == ["baseline", "cut 7 (block6)", "cut 9 (head)"]
    assert "(n=2)" in summary.loc["baseline", "all"] and "(n=3)" in summary.loc["cut 7 (block6)", "1 / class"]
    gains = backbone.gains(f, grids["F"])
    assert set(gains["size"]) == {"1 / class", "2 / class", "all"} and set(gains["cut"]) == {7, 9}


def test_the_chosen_cut_is_the_best_on_validation_and_carries_its_interval(studies):
    studies, grids = studies
    chosen = backbone.chosen_cuts(studies, grids)
    assert len(chosen) == 6  # 3 sizes x 2 modes
    records, _ = backbone.frames(studies["FT"], grids["FT"])
    one = records[records.samples_per_class == 2].groupby("sampled_cut_point")["val_acc"].mean()
    assert chosen.loc[("2 / class", "FT"), "cut"] == one.idxmax()
    row = chosen.loc[("2 / class", "FT")]
    low, high = (float(v) for v in row["95% CI"].split(" to "))
    assert low <= row["gain"] <= high and row["n"] == 3
    assert row["stage"] == {7: "block6", 9: "head"}[row["cut"]]


def test_a_stored_run_comes_out_of_the_code_again_and_the_figure_names_its_sizes(studies):
    studies, grids = studies
    table = backbone.recheck_table(studies, cut_point=7, size=Size(per_class=1))
    assert list(table.index) == ["F cut 7", "FT cut 7"]
    assert (table["stored test accuracy"] == table["trained again"]).all()
    f = studies["F"]
    records, baselines = backbone.frames(f, grids["F"])
    figure = plots.accuracy_boxplot(records, baselines, sizes=backbone.panel_titles(f, grids["F"]))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("1 / class (3 images)") and titles[-1].startswith(f"all ({len(f.task.train)} images)")


def test_clustering_scores_every_stage_of_both_networks_in_network_order(studies):
    studies, _ = studies
    records = backbone.clustering(studies["F"], cut_point=7)
    table = backbone.clustering_table(records)
    assert list(table.index) == ["pretrained (ImageNet)", "fine-tuned (F, cut 7)"]
    assert list(table.columns) == ["input", *studies["F"].backbone.layer_names, "fc"]
    # the frozen stages are the same in both networks; the images are the test split's
    assert (table.loc[:, "input":"block5"].nunique() == 1).all()
    assert {r["n_images"] for r in records} == {len(studies["F"].task.test)}
    # saved and resumed: a second call trains the network again but clusters nothing new
    assert backbone.clustering(studies["F"], cut_point=7) == records
