# %% [markdown]
# ## The regularisers against plain fine-tuning
# Regularisers of F keep the network near what ImageNet taught it, each written from its paper (`functions/train/regularisers.py`; `regularisers` lists those run here): **l2sp** (L2-SP, Li et al. 2018: `alpha/2 ||w - w0||^2` over the stages that train, plus `0.01/2 ||w||^2` on the head), **delta** (DELTA, Li et al. 2019: the distance of the last stage's feature maps to the pretrained network's, each channel weighted by how much removing it raises a linear classifier's loss on the training images, plus the same head term) and **bss** (Batch Spectral Shrinkage, Chen et al. 2019: `eta` times the square of the smallest singular value of the batch's features). Each ran at the cuts above, picked its cut by validation accuracy (its runs there are in the results files, not in the tables above), and ran again there choosing its learning rate and its weight (the paper's value or ten times it) on validation. Each adds a penalty to F's loss, so each is tested against tuned F, in a family of their own (Holm over the regularisers).

# %%
# NBVAL_IGNORE_OUTPUT: progress bars show rates and times
regularised_records, regularised_baselines = study.tuned_runs(data, backbone, [modes[0], *regularisers], folder,
                                                              per_class, repeats)
regularised_frame = strategies.strategy_frame(regularised_records, {}, reference=f"{modes[0]}-tuned")

# %%
regularised_best = strategies.best_cuts(regularised_frame, regularised_baselines)
display(regularised_best.drop(columns=["seconds", "val_acc"]).rename(index=names).round(3))
display(strategies.chosen_rates({m: r for m, r in regularised_records.items() if strategies.is_regularised(m)},
                                "weight"))
regularised_tests = strategies.against_reference(regularised_frame, regularised_best, reference=f"{modes[0]}-tuned")
display(stats.shown_tests(regularised_tests).replace({"sampled_percentage": names}).round(3))
print(strategies.verdict(regularised_frame, regularised_best, regularised_tests, reference=f"{modes[0]}-tuned",
                         size_names=names))
