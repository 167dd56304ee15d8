# %% [markdown]
# # {{folder}}: every figure of the study
# Reads the folder's results files (written by the empirical and truncation notebooks) and draws the study's figures, saved under `results/figures/` (`results/<profile>/figures/` for a profile other than quick).

# %%
{{parameters}}

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
chosen, cfg, grid = study.plan(folder, setup, profile, 'FR', percentages, repeats, cut_points, seed)
study.use_output_root(output_root)
modes = study.available_modes(chosen, grid.profile)
runs = {mode: study.sweep_records(chosen, mode, grid.profile) for mode in modes}
baselines = runs[modes[0]][1]
print('modes with results:', modes)

# %% [markdown]
# ## Mean accuracy versus amount of target data
# Lines are means over repeats, bands the inter-quartile range; the x axis is logarithmic. Where a cut's line meets the baseline, transfer stops helping.

# %%
for mode in modes:
    figure = plots.mean_curves(runs[mode][0], baselines)
    plots.save_figure(figure, folder, f'mean_curves_{setup}_{mode}', grid.profile)
    display(figure)

# %% [markdown]
# ## Gain over the baseline
# Each cell is the mean test accuracy of a cut point minus the baseline's at the same percentage: blue means transfer helps, red that it hurts, white no difference.

# %%
for mode in modes:
    figure = plots.gain_heatmap(runs[mode][0], baselines)
    plots.save_figure(figure, folder, f'gain_{setup}_{mode}', grid.profile)
    display(figure)
    display(plots.gain_matrix(runs[mode][0], baselines).round(3))

# %% [markdown]
# ## Train versus test accuracy
# Points far below the diagonal overfit: they fit their few training images but do not generalise.

# %%
for mode in modes:
    figure = plots.train_vs_test(runs[mode][0], baselines)
    plots.save_figure(figure, folder, f'train_vs_test_{setup}_{mode}', grid.profile)
    display(figure)

# %% [markdown]
# ## Freeze, re-initialise or truncate?
# The three modes side by side: F keeps the later layers and fine-tunes them, FR re-initialises them, FT removes them.

# %%
figure = plots.compare_modes({mode: runs[mode][0] for mode in modes}, baselines,
                            title=f'{folder} ({setup}): transfer modes, {grid.profile} profile')
plots.save_figure(figure, folder, f'modes_{setup}', grid.profile)
display(figure)

# %% [markdown]
# ## Ranking of cut points
# Mean rank over repeats (1 = best) per percentage, and the paired tests against the baseline (`cut_b` = -1) with Holm-adjusted p-values.

# %%
for mode in modes:
    print(f'mode {mode}')
    display(stats.rank_cut_points(*runs[mode]).round(3))
    tests = stats.paired_tests(*runs[mode])
    display(tests[tests.cut_b == -1].round(3))
