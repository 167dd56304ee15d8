# %% [markdown]
# ## The regularisers against plain fine-tuning
# The tables above also hold F itself (the blocks from k on fine-tuned, nothing else) and three regularisers of it that keep the network near what pretraining learned, each written from its paper (`functions/train/regularisers.py`):
#
# - **l2sp**: L2-SP (Li et al. 2018), `alpha/2 ||w - w0||^2` over the reused weights that train, plus `0.01/2 ||w||^2` on the new head;
# - **delta**: DELTA (Li et al. 2019), the distance of the last block's feature maps to the pretrained network's, weighted per channel by how much removing the channel raises a linear classifier's loss on the training images, plus the same head term;
# - **bss**: Batch Spectral Shrinkage (Chen et al. 2019), `eta` times the square of the smallest singular value of the batch's features.
#
# Every regulariser run trains at the two weights of `regularisation_weights` in its parameters (the paper's value and ten times it) and keeps the one with the better validation accuracy. Each adds a penalty to F's loss, so its question is whether the penalty beats F itself, not FR. Each runs again at the cut its runs above picked, as the strategies did, every run choosing its learning rate (0.0003, 0.001, 0.003) and its weight (the two of `regularisation_weights`) on validation, and is tested against F tuned the same way at F's chosen cut, paired by repeat, in a family of its own (Holm over the three regularisers). The counts show which rate and which weight the runs chose.

# %%
regularised_runs, regularised_trainable = study.tuned_sweeps(
    chosen, {mode: plans[mode] for mode in strategies.regularised_modes(best)}, best, tuned_repeats, device=device)
regularised_frame = strategies.strategy_frame(regularised_runs, regularised_trainable, reference='F-tuned')
regularised_best = strategies.best_cuts(regularised_frame, baselines)
display(regularised_best.drop(columns=['seconds', 'val_acc']).round(3))
display(strategies.chosen_rates(regularised_runs))
display(strategies.chosen_rates({m: runs for m, runs in regularised_runs.items() if m != 'F-tuned'}, 'weight'))

# %%
regularised_tests = strategies.against_reference(regularised_frame, regularised_best, reference='F-tuned')
display(stats.shown_tests(regularised_tests).round(3))
regularised_spread = strategies.spread_against_gain(regularised_frame, regularised_tests, reference='F-tuned')
display(regularised_spread.round(3))
print(strategies.verdict(regularised_frame, regularised_best, regularised_tests, reference='F-tuned'))
print(strategies.spread_verdict(regularised_spread, reference='F-tuned'))
