# %% [markdown]
# ## Does the label-free choice choose well?
# Deep embedded validation picks each `-tuned` run's setting without a target label. After the choice, every candidate of the run was also scored on the target's test images (never used to choose) and on the source's validation images, so the choice can be judged, beside the other label-free way of choosing that the literature uses, the source's validation accuracy (ties broken at random): each way's pick against a candidate picked at random (the mean over the run's candidates; paired by run, 95% bootstrap interval, exact Wilcoxon p), the best candidate in hindsight, how often the pick was the best, and how closely each ranks the candidates as the test labels do (mean Spearman correlation over runs). The results above are deep embedded validation's picks; this section judges the selectors, it does not choose again. The sentences are written from the numbers.

# %%
quality = adaptation.selection_quality({{tuned_records}})
print(adaptation.selection_verdict(quality))
display(quality.round(3))
