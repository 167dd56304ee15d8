# %% [markdown]
# # {{folder}}: do the layers separate the classes?
# K-means (k = number of classes) on each layer's activations, scored against the true labels: adjusted Rand index (ARI, 0 = chance, 1 = perfect), normalised mutual information, cluster accuracy and pairwise precision/recall. Done for the pretrained model and a fine-tuned one, on source-task and target-task images.

# %%
{{parameters}}

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, stats
from functions.notebooks import study
from functions.analysis import clustering
from functions.runs.clustering import ari_path, run_clustering
chosen, cfg, grid = study.plan(folder, setup, profile, 'FR', percentages, repeats, cut_points, seed)
study.use_output_root(output_root)
models = {'pretrained': study.load_pretrained(chosen, cfg),
          f'fine-tuned (FR, cut {fine_tune_cut})': study.fine_tuned_model(
              chosen, cfg, fine_tune_cut, grid.percentages[-1], device=device)}
data = {'source': cfg.source_task().train, 'target': cfg.target_task().train}
records = run_clustering(
    ari_path(folder, setup), cfg.params(), models, data, grid.percentages, grid.repeats,
    seed=cfg.generate_dataset_seed, max_images=max_images, n_init=5, per_channel=per_channel)
print(len(records), 'clustering records')

# %% [markdown]
# ## ARI per layer
# Mean over repeats of the ARI of the pooled channel vector. Rising values mean deeper layers separate the classes better; a drop on target data marks where the features become specific to the source classes.

# %%
table = clustering.layer_scores(records, 'target').groupby(['model', 'layer'], sort=False)['ari'].mean().unstack('layer')
display(table[clustering.layer_order(table.columns)].round(2))

# %%
for split in ('source', 'target'):
    figure = plots.ari_boxplot(records, split=split)
    plots.save_figure(figure, folder, f'ari_{setup}_{split}')
    display(figure)

# %% [markdown]
# ## The best single channel
# The highest ARI of any one channel per layer: a layer can hold a class-separating channel even when its pooled vector does not separate the classes.

# %%
if per_channel:
    best = clustering.layer_scores(records, 'target', channels='max').groupby(['model', 'layer'], sort=False)['ari'].mean().unstack('layer')
    display(best[clustering.layer_order(best.columns)].round(2))
