# %% [markdown]
# ## With the learning rate chosen on validation
# One learning rate suits some strategies better than others. Here F and each strategy run again at the cut their runs above picked, `repeats` repeats at each size of `per_class`, every run trained at three learning rates (0.0003, 0.001, 0.003) keeping the one with the best validation accuracy (modes `<mode>-tuned`, which `make real` ran); the test split chooses nothing. Each tuned strategy is tested against tuned F, paired by repeat, Holm-corrected over the strategies of a size. The counts show which rate the runs chose.

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
tuned_records, tuned_baselines = study.tuned_runs(data, backbone, modes, folder, per_class, repeats)
tuned_frame = strategies.strategy_frame(tuned_records, {}, reference=f"{modes[0]}-tuned")

# %%
tuned_best = strategies.best_cuts(tuned_frame, tuned_baselines)
display(tuned_best.drop(columns=["seconds", "val_acc"]).rename(index=names).round(3))
display(strategies.chosen_rates(tuned_records))
tuned_tests = strategies.against_reference(tuned_frame, tuned_best, reference=f"{modes[0]}-tuned")
display(stats.shown_tests(tuned_tests).replace({"sampled_percentage": names}).round(3))
tuned_spread = strategies.spread_against_gain(tuned_frame, tuned_tests, reference=f"{modes[0]}-tuned")
display(tuned_spread.rename(index=names).round(3))
print(strategies.verdict(tuned_frame, tuned_best, tuned_tests, reference=f"{modes[0]}-tuned", size_names=names))
print(strategies.spread_verdict(tuned_spread, reference=f"{modes[0]}-tuned", size_names=names))
