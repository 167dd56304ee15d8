# %% [markdown]
# # {{folder}}: predicting the best cut without fine-tuning
# Transferability scores read one forward pass of the frozen source network over the target data and estimate how well the features entering each cut point serve the target task: LogME and H-score (plain and shrinkage) on the global-average-pooled (`_gap`) and flattened (`_flat`) activation, LEEP and NCE from the source head. Are they right? We compare them with the measured sweep.

# %%
{{parameters}}

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
import pandas as pd
from functions.analysis import transferability
chosen, cfg, grid = study.plan(folder, setup, profile, mode, percentages, repeats, cut_points, seed)
study.use_output_root(output_root)
source = study.load_pretrained(chosen, cfg)
task = cfg.target_task()

# %% [markdown]
# ## Scores per cut point
# Each percentage is scored on the images its first repeat trained on: the data a researcher would actually have. Higher is better for every score.

# %%
scores = {p: study.cut_scores(source, study.training_subset(cfg, task, p, 0), progress=False)
          for p in grid.percentages}
for p in grid.percentages:
    print(f'fraction {p:g} of the target training data')
    display(scores[p].round(3))

# %% [markdown]
# ## Do the scores rank the cut points as the sweep does?
# Kendall's tau and Spearman's rho between each score and the mean measured test accuracy over cut points; `top_cut_ok` says whether the score's favourite cut is the measured best or not significantly worse than it (paired Wilcoxon, Holm).

# %%
records, baselines = study.sweep_records(chosen, mode, grid.profile)
validation = study.validate_scores(scores, records)
display(validation.round(3))

# %%
figure = transferability.plot_score_vs_accuracy(scores[grid.percentages[0]], records, 'logme_flat')
plots.save_figure(figure, folder, f'logme_vs_accuracy_{setup}_{mode}', grid.profile)
display(figure)

# %% [markdown]
# ## Verdict

# %%
print(study.transferability_verdict(validation))

# %% [markdown]
# ## Records for the recommender
# One row per percentage and cut point: model and target metadata, the scores and the measured accuracy, written beside the profile's results. `python -m functions recommend` collects the quick profile's rows of every folder and asks whether a regression on metadata and scores, tested on a setup it has not seen, ranks the cut points better than the best single score.

# %%
path = study.save_transferability_records(chosen, cfg, scores, records, source, task, grid.profile)
table = pd.read_csv(path)
print(f'{len(table)} records with {table.shape[1]} columns in {path.name}; some of them:')
display(table[['setup', 'mode', 'percentage', 'cut_point', 'logme_flat', 'test_acc']].round(3))
