# %% [markdown]
# # {{folder}}: which stages of an ImageNet network to reuse, freeze, re-initialise or cut
# The study's question asked of a real network on real colour images: EfficientNet-Lite0, pretrained on ImageNet, transferred to the `{{data}}` images. Cut point k keeps the network's first k stages (stem, block1 .. block7, head) with their ImageNet weights, frozen with their BatchNorm statistics; the stages after them keep their ImageNet weights and train (**F**), are re-initialised and train (**FR**), or are removed, the new head pooling stage k (**FT**). The baseline trains the same network from its random initialisation. Every data size and repeat draws one training subset, shared by the baseline and every cut point, so runs pair by repeat; the validation images select each run's epoch, the test split scores it once.

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
first = studies[modes[0]]
print(study.describe(first))
display(study.sizes_table(first, grids[modes[0]]))

# %% [markdown]
# ## Sweeps
# Results files are resumed: runs already in them are not trained again (`make real` trains them; see the README for its time). The tables give mean ± standard deviation of test accuracy on the test split, per cut point (named by the last stage it keeps) and data size.

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
for mode, cut_study in studies.items():
    cut_study.run(grids[mode], progress=False)

# %%
for mode, cut_study in studies.items():
    print(f"mode {mode}")
    display(study.summary(cut_study, grids[mode]))

# %% [markdown]
# ## Which cut point transfers best?
# One panel per data size, each with its own y axis and its number of repeats; each column holds the repeats of one cut point, the grey one the baseline.

# %%
for mode, cut_study in studies.items():
    records, baselines = study.frames(cut_study, grids[mode])
    figure = plots.accuracy_boxplot(records, baselines, title=f"{folder}: {backbone} on {data}, mode {mode}",
                                    sizes=study.panel_titles(cut_study, grids[mode]), cut_axis=plots.STAGE_CUT_LABEL)
    plots.save_figure(figure, folder, f"test_accuracy_{backbone}_{mode}", "real")
    display(figure)

# %% [markdown]
# ## Does transfer help?
# Each cut point against the baseline trained on the same subsets: the mean paired gain in test accuracy with a 95% bootstrap interval over the repeats, and the exact Wilcoxon signed-rank test, Holm-corrected over the cut points of each size. The sentences are written from the numbers.

# %%
for mode, cut_study in studies.items():
    gains = study.gains(cut_study, grids[mode])
    print(stats.gains_verdict(gains, f"{folder} {mode}"))
    display(gains.pivot(index="size", columns="cut", values="gain").round(3))

# %% [markdown]
# ## How many stages to freeze, per data size
# The cut point each mode's validation accuracy picks at each size (over the repeats every cut point has; the test split never picks), its test accuracy and its gain over the baseline.

# %%
display(study.chosen_cuts(studies, grids))

# %% [markdown]
# ## Do the stored results still come out of the code?
# One stored run of each mode at the third cut point from the top (block6: cheap to train, and F, FR and FT differ there) on the smallest size, trained again from scratch beside its stored test accuracy; a value within 0.01 (the float rounding between kinds of CPU) is printed as the stored one.

# %%
smallest = grids[modes[0]].sizes[0]
display(study.recheck_table(studies, cut_point=len(first.backbone.layer_names) - 2, size=smallest))
