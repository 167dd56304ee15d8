# %% [markdown]
# # {{folder}}: which fine-tuning strategy for an ImageNet network?
# At cut point k, EfficientNet-Lite0's first k stages keep their ImageNet weights and are frozen (their BatchNorm statistics too) or adapted cheaply; the stages after them keep their ImageNet weights and train, as in mode **F** (plain fine-tuning, the reference here); the head is new. Five strategies on the `{{data}}` images:
#
# - **progressive**: the head trains first, then one stage per step is unfrozen from the top down to stage k (each step at most `stage_epochs` epochs, ending early on a validation plateau; the last gets the full budget; the best weights of all steps are kept);
# - **discriminative**: every stage from k on trains, stage i at `lr * lr_decay ** (depth - i)`, the head at `lr`;
# - **lora_r&lt;rank&gt;**: LoRA adapters (peft) on the frozen stages' convolutions but the depthwise ones, merged into the weights after training;
# - **ia3**: a learned scale per output channel of the frozen stages' convolutions (peft);
# - **bitfit**: only the frozen stages' biases (their BatchNorm shifts) train.
#
# All train on the same subsets, seeds and epoch budget as F's runs, so runs pair by repeat, and are scored once on the test split.

# %%
{{parameters}}

# %%
from IPython.display import display
from functions.analysis import plots, stats, strategies
from functions.notebooks import backbone as study
from functions.notebooks.study import use_output_root
use_output_root(output_root)
studies = study.studies(data, backbone, modes, folder)
grids = study.grids(studies, per_class, fractions, cut_points, repeats)
reference = studies[modes[0]]
print(study.describe(reference))
display(study.sizes_table(reference, grids[modes[0]]))

# %% [markdown]
# ## Sweeps
# Results files are resumed: runs already in them are not trained again (`make real` trains them; F's runs are the cut-point study's).

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
for mode, cut_study in studies.items():
    cut_study.run(grids[mode], baselines=False, progress=False)
records, baselines = study.strategy_runs(studies, grids)
frame = strategies.strategy_frame(records, {}, reference=modes[0])
names = study.size_names(reference, grids[modes[0]])
sizes = study.panel_titles(reference, grids[modes[0]])

# %% [markdown]
# ## Accuracy per strategy and cut point
# Mean test accuracy per cut point with inter-quartile bands, one line per mode, the baseline (the network trained from its random initialisation on the same subsets) a grey band.

# %%
figure = plots.compare_modes(records, baselines, title=f"{folder}: fine-tuning strategies on {backbone}",
                             sizes=sizes, cut_axis=plots.STAGE_CUT_LABEL)
plots.save_figure(figure, folder, f"strategies_{backbone}", "real")
display(figure)

# %% [markdown]
# ## The best cut of each strategy
# Per size, the cut point with the highest mean validation accuracy (the test split never picks it), its mean test accuracy, trainable parameters, mean epochs and the gain over the baseline. Progressive unfreezing trains longer than the others: read its gain together with its epochs.

# %%
best = strategies.best_cuts(frame, baselines)
display(best.drop(columns="seconds").rename(index=names).round(3))

# %% [markdown]
# ## Accuracy against what is trained and what it costs
# Each point is one mode at one cut point. Left of F at the same height means as accurate with fewer trainable parameters. Times are seconds per run on the machine that made the results; the adapters and BitFit run the whole network every step (they change the stages before the cut), the others only the stages after it.

# %%
figure = strategies.accuracy_against(frame, baselines, "trainable_params", sizes)
plots.save_figure(figure, folder, f"strategies_parameters_{backbone}", "real")
display(figure)

# %%
# NBVAL_IGNORE_OUTPUT
# (times differ between machines)
figure = strategies.accuracy_against(frame, baselines, "seconds", sizes)
plots.save_figure(figure, folder, f"strategies_seconds_{backbone}", "real")
display(figure)
display(best["seconds"].unstack().rename(index=names).round(1))

# %% [markdown]
# ## Better than plain fine-tuning?
# Each strategy at its chosen cut against F at F's, runs paired by repeat: the mean difference in test accuracy with a 95% bootstrap interval, the exact Wilcoxon p, Holm-corrected over the strategies of a size (one test per strategy answers "is it better than F"), and the repeats a power calculation from the measured spread asks to detect a difference of that size (80% power).

# %%
tests = strategies.against_reference(frame, best, reference=modes[0])
display(stats.shown_tests(tests).replace({"sampled_percentage": names}).round(3))

# %% [markdown]
# ## The answer in words

# %%
print(strategies.verdict(frame, best, tests, reference=modes[0], size_names=names))

# %% [markdown]
# ## Do the stored results still come out of the code?
# One stored run of the strategy whose runs are the fastest (their recorded seconds at the smallest size), at the cut its validation accuracy picks, trained again from scratch beside its stored test accuracy (shown as stored when within the float rounding of other kinds of CPU).

# %%
smallest = best.loc[min(names)].drop(index=modes[0])
fastest = smallest["seconds"].idxmin()
study.recheck_table({fastest: studies[fastest]}, int(smallest.loc[fastest, "best_cut"]), grids[fastest].sizes[0])
