# %% [markdown]
# # {{folder}}: which fine-tuning strategy?
# At cut point k the pretrained blocks before k are kept and either frozen or adapted cheaply; the blocks from k on keep their pretrained weights and train, as in mode F; the output layer is new. Beside FR (blocks from k on re-initialised) and the baseline (no transfer), five strategies:
#
# - **progressive**: the head trains first, then one block per stage is unfrozen from the top down to block k (each stage at most `stage_epochs` epochs, ending early on a validation plateau; the last stage gets the full budget; the best weights of all stages are kept);
# - **discriminative**: every block from k on trains, block i at `lr * lr_decay ** (depth - i)`;
# - **lora_r&lt;rank&gt;**: LoRA adapters (peft) on the frozen blocks' convolutions, merged into the weights after training;
# - **ia3**: a learned scale per output channel of the frozen blocks' convolutions (peft);
# - **bitfit**: only the frozen blocks' biases train.
#
# All train on the same balanced subsets, seeds and epoch budget as FR, and are scored on the official test split.

# %%
{{parameters}}

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
from functions.analysis import strategies
study.use_output_root(output_root)
plans = {mode: study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed)
         for mode in modes}
chosen, cfg, grid = plans[modes[0]]
display(study.parameter_table(cfg, grid))

# %% [markdown]
# ## Sweeps
# Results files are resumed: runs already in them are not trained again (`make strategies` made them).

# %%
# NBVAL_IGNORE_OUTPUT
# (progress bars show rates and times)
paths = {mode: study.run_sweep(*plans[mode], device=device) for mode in modes}
records, baselines, trainable = study.strategy_records(chosen, plans)
frame = strategies.strategy_frame(records, trainable)

# %% [markdown]
# ## Accuracy per strategy and cut point
# One panel per fraction of target data: mean test accuracy per cut point with inter-quartile bands, one line per strategy, the baseline a grey band. At cut 0 nothing is frozen, so the adapter strategies and BitFit coincide there.

# %%
figure = plots.compare_modes(records, baselines, title=f'{folder} ({setup}): fine-tuning strategies, {grid.profile} profile')
plots.save_figure(figure, folder, f'strategies_{setup}')
display(figure)

# %% [markdown]
# ## The best cut of each strategy
# Per percentage, the cut point with the highest mean validation accuracy (the test split never picks it), its mean test accuracy, trainable parameters, mean epochs and the gain over the baseline. Progressive unfreezing trains longer than the others (up to `stage_epochs` per block above the cut before its last stage's full budget): read its gain together with its epochs.

# %%
best = strategies.best_cuts(frame, baselines)
display(best.drop(columns='seconds').round(3))

# %% [markdown]
# ## Accuracy against what is trained and what it costs
# Each point is one strategy at one cut point. Left of FR at the same height means as accurate with fewer trainable parameters. Times are seconds per run on the machine that made the results (FR's runs train in groups through the batched engine, and their time is the group's share per run).

# %%
figure = strategies.accuracy_against(frame, baselines, 'trainable_params')
plots.save_figure(figure, folder, f'strategies_parameters_{setup}')
display(figure)

# %%
# NBVAL_IGNORE_OUTPUT
# (times differ between machines)
figure = strategies.accuracy_against(frame, baselines, 'seconds')
plots.save_figure(figure, folder, f'strategies_seconds_{setup}')
display(figure)
display(best['seconds'].unstack().round(2))

# %% [markdown]
# ## Better than FR, at the default learning rate?
# Each strategy at its chosen cut against FR at FR's, runs paired by repeat (both trained on the same subsets): the mean difference in test accuracy with a 95% bootstrap interval, the exact Wilcoxon p, Holm-corrected over the strategies of a percentage (one test per strategy answers "is it better than FR"), and the repeats a power calculation from the measured spread asks to detect a difference of that size (80% power). Where no strategy differs significantly the p values are left out of the table, and the verdict below says why. Every run here trains at the study's learning rate (0.001).

# %%
tests = strategies.against_reference(frame, best)
display(stats.shown_tests(tests).round(3))
print(strategies.verdict(frame, best, tests))
