# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
study.use_output_root(output_root)
plans = {mode: study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed)
         for mode in modes}
chosen, cfg, grid = plans[modes[0]]
display(study.parameter_table(cfg, grid))

# %% [markdown]
# ## The source model
# The network pretrained on the source classes is loaded when a file with the same configuration exists (made by `make pretrained`), and trained otherwise. Its test accuracy on the source task says how good the features are that we are about to transfer.

# %%
source = study.load_pretrained(chosen, cfg)
info = study.pretrained_info(chosen, cfg)
print(f"source test accuracy {info['test_acc']:.3f} after {info['epochs']} epochs")

# %% [markdown]
# ## Sweeps
# Every cut point is trained on the same balanced subsets (one per percentage and repeat) as the baseline, which trains the whole network from scratch. Results files are resumed: runs already in them are not trained again. The table gives mean ± standard deviation of test accuracy on the official test split.

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in modes}

# %%
for mode in modes:
    print(f'mode {mode}')
    display(study.summary_table(study.records_frame(*paths[mode].values())))

# %% [markdown]
# ## Which cut point transfers best?
# One panel per fraction of target data, each with its own y axis and its number of repeats n; each box holds the repeats of one cut point (with three repeats or fewer: the points and a line at their mean), the grey one the baseline. Boxes above the baseline mean the transferred layers help; the cut with the highest box is the best place to cut.

# %%
for mode in modes:
    records, baselines = study.sweep_records(chosen, mode, grid.profile)
    figure = plots.accuracy_boxplot(records, baselines, title=f'{folder} ({setup}), mode {mode}, {grid.profile} profile')
    plots.save_figure(figure, folder, f'test_accuracy_{setup}_{mode}', grid.profile)
    display(figure)

# %% [markdown]
# ## Is the difference real?
# Paired Wilcoxon signed-rank tests (pairing runs that trained on the same subset), Holm-corrected within each percentage. Cut points sharing a letter are not significantly different; `same_as_best` marks those indistinguishable from the best. This family (every pair of cut points) answers "which cut is best"; the next section answers "does transfer help".

# %%
for mode in modes:
    records, baselines = study.sweep_records(chosen, mode, grid.profile)
    tests = stats.paired_tests(records, baselines)
    verdict = stats.pairs_verdict(tests, f'{folder} {mode} ({grid.profile} profile)')
    print(verdict or f'mode {mode}')
    if not verdict:  # the table only where some pair differs
        display(stats.best_groups(records, baselines, tests=tests).round(3))

# %% [markdown]
# ## Does transfer help?
# Each cut point against the baseline trained on the same subsets: the mean paired gain in test accuracy (cut minus baseline; the table, per fraction and cut point) with a 95% bootstrap interval over the repeats, and the exact Wilcoxon signed-rank test, Holm-corrected over the cut points of each fraction (one test per cut: the family of this question). The sentences, written from the numbers, give the best cut of each fraction and say whether its gain is significant, or why these repeats cannot show it: with n paired repeats the smallest p an exact test gives is 2 / 2^n before the correction. Where it is not significant they add how many repeats would detect a gain of the measured size and spread with 80% power (a paired t-test's power at the Holm bar, scaled by the Wilcoxon test's efficiency).

# %%
for mode in modes:
    records, baselines = study.sweep_records(chosen, mode, grid.profile)
    gains = stats.gains_over_baseline(records, baselines)
    print(stats.gains_verdict(gains, f'{folder} {mode} ({grid.profile} profile)'))
    display(gains.pivot(index='sampled_percentage', columns='cut', values='gain').round(3))

# %% [markdown]
# ## Do the stored results still come out of the code?
# Results files are resumed, so the cells above read them. Here stored runs of the smallest fraction (the cheapest to train again: each trains alone, as one run) are trained again from scratch: the middle one of the notebook's cut points in each mode of this notebook{{recheck_baseline_prose}}, each printed beside its stored test accuracy. Float rounding differs between kinds of CPU, and between a run trained alone and the sweep's group of repeats, and moved these accuracies by up to 0.008 between the machines we measured, so a value trained again within 0.01 of the stored one is printed as the stored value; a code change that moves a result further prints the new number, and the notebook check fails.

# %%
middle = grid.cut_points[len(grid.cut_points) // 2]  # cut 3 of 0..6
smallest = min(grid.percentages)
{{recheck_call}}
