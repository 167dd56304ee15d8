# %% [markdown]
# ## Do the stored results still come out of the code?
# One stored run of the strategy whose runs are the fastest (their recorded seconds at the smallest fraction), at the cut its validation accuracy picks, trained again from scratch beside its stored test accuracy; a value within 0.01 of the stored one (float rounding differs between kinds of CPU) prints as stored. The strategies share one trainer; the test suite trains stored runs of progressive unfreezing and LoRA again under another CPU's rounding (`tests/runs/test_recheck.py`), and this folder's empirical notebook the baseline.

# %%
smallest = best.loc[grid.percentages[0]].drop(index='FR')
fastest = smallest['seconds'].idxmin()
study.recheck_table(chosen, {fastest: plans[fastest]}, cut_point=int(smallest.loc[fastest, 'best_cut']), percentage=grid.percentages[0], device=device, baseline=False)
