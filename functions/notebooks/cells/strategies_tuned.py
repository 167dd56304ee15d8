# %% [markdown]
# ## With the learning rate chosen on validation
# One learning rate suits some strategies better than others. Here each mode runs again at the cut its runs above picked, with `tuned_repeats` repeats, every run trained at three learning rates (0.0003, 0.001, 0.003) keeping the one with the best validation accuracy: modes `<mode>-tuned`, which `make strategies` ran. The test split chooses nothing. FR chooses its rate the same way, so the comparison stays even. Where several LoRA ranks ran, the rank with the best validation accuracy above is the one tuned. The counts show which rate the runs chose.

# %%
print(strategies.chosen_lora_rank(best))
tuned_runs, tuned_trainable = study.tuned_sweeps(chosen, {mode: plans[mode] for mode in strategies.modes_to_tune(best)},
                                                 best, tuned_repeats, device=device)
tuned_frame = strategies.strategy_frame(tuned_runs, tuned_trainable, reference='FR-tuned')
tuned_best = strategies.best_cuts(tuned_frame, baselines)
display(tuned_best.drop(columns=['seconds', 'val_acc']).round(3))
display(strategies.chosen_rates(tuned_runs))

# %% [markdown]
# Each tuned strategy against tuned FR, paired by repeat as above, and each one's spread across seeds: the standard deviation of its test accuracy over the repeats and of its paired differences from FR. A mean difference smaller than the spread of the differences is one the next single run can reverse; whether the mean itself holds is what the test answers.

# %%
tuned_tests = strategies.against_reference(tuned_frame, tuned_best, reference='FR-tuned')
display(stats.shown_tests(tuned_tests).round(3))
spread = strategies.spread_against_gain(tuned_frame, tuned_tests, reference='FR-tuned')
display(spread.round(3))

# %% [markdown]
# ## The answer in words

# %%
print(strategies.verdict(tuned_frame, tuned_best, tuned_tests, reference='FR-tuned'))
print(strategies.spread_verdict(spread, reference='FR-tuned'))
