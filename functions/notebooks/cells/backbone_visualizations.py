# %% [markdown]
# # {{folder}}: every figure of the cut-point study on `{{data}}`
# Reads the folder's results files (written by the empirical notebook, or by `python -m functions run --data {{data}} --output {{folder}}`) and draws the study's figures for the ImageNet network cut at its stage boundaries, saved under `results/real/figures/`. Nothing is trained here.

# %%
{{parameters}}

# %%
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import backbone as study
from functions.notebooks.study import use_output_root
use_output_root(output_root)
studies = study.studies(data, backbone, modes, folder)
grids = study.grids(studies, per_class, fractions, cut_points, repeats)
runs = {mode: study.frames(cut_study, grids[mode]) for mode, cut_study in studies.items()}
first = studies[modes[0]]
sizes = study.size_labels(first, grids[modes[0]])
baselines = runs[modes[0]][1]
print(study.describe(first))
display(study.sizes_table(first, grids[modes[0]]))

# %% [markdown]
# ## Mean accuracy versus amount of training data
# Lines are means over repeats, bands the inter-quartile range, the baseline dashed; the x axis is the share of the training pool on a log scale, named by its images per class. Where a cut point's line meets the baseline, transfer stops helping.

# %%
for mode, (records, _) in runs.items():
    figure = plots.mean_curves(records, baselines, sizes=sizes, cut_axis=plots.STAGE_CUT_LABEL,
                               title=f"{folder}: {backbone} on {data}, mode {mode}")
    plots.save_figure(figure, folder, f"mean_curves_{backbone}_{mode}", "real")
    display(figure)

# %% [markdown]
# ## Gain over the baseline
# Each cell is a cut point's mean test accuracy minus the baseline's on the same data size: blue means transfer helps, red that it hurts, white no difference.

# %%
for mode, (records, _) in runs.items():
    figure = plots.gain_heatmap(records, baselines, sizes=sizes, cut_axis=plots.STAGE_CUT_LABEL,
                                title=f"{folder}: {backbone} on {data}, mode {mode}")
    plots.save_figure(figure, folder, f"gain_{backbone}_{mode}", "real")
    display(figure)

# %% [markdown]
# ## Train versus test accuracy
# Every run's accuracy on its own training images against the test split's; points far below the diagonal fit their few images without generalising.

# %%
for mode, (records, _) in runs.items():
    figure = plots.train_vs_test(records, baselines, sizes=sizes, cut_axis=plots.STAGE_CUT_LABEL,
                                 title=f"{folder}: {backbone} on {data}, mode {mode}")
    plots.save_figure(figure, folder, f"train_vs_test_{backbone}_{mode}", "real")
    display(figure)

# %% [markdown]
# ## Freeze, re-initialise or truncate?
# The modes side by side per data size: F keeps the later stages' ImageNet weights and fine-tunes them, FR re-initialises them, FT removes them; the grey band is the baseline's inter-quartile range.

# %%
figure = plots.compare_modes({mode: records for mode, (records, _) in runs.items()}, baselines,
                             title=f"{folder}: {backbone} on {data}, transfer modes",
                             sizes=study.panel_titles(first, grids[modes[0]]), cut_axis=plots.STAGE_CUT_LABEL)
plots.save_figure(figure, folder, f"modes_{backbone}", "real")
display(figure)

# %% [markdown]
# ## Ranking of cut points
# Per mode, each cut point's mean rank over the repeats every cut point of a size has (1 = best, ties averaged), per data size: a cut that ranks first in most repeats transfers best there, whatever the spread between repeats. The paired tests against the baseline are in the empirical notebook.

# %%
for mode, (records, _) in runs.items():
    print(f"mode {mode}")
    display(study.ranking(studies[mode], grids[mode]))
