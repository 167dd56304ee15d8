# %% [markdown]
# # {{folder}}: which stages separate the `{{data}}` classes?
# K-means (k = the number of classes) on each stage's output of EfficientNet-Lite0, averaged over space, for the `{{data}}` test images (which no network here trained on), scored against their labels: adjusted Rand index (ARI: 0 is chance, 1 a perfect match), normalised mutual information, cluster accuracy and pairwise precision and recall. Two networks: the ImageNet network as it is (its last layer the ImageNet classifier's 1,000 logits), and the same network fine-tuned in mode F on every training image at a cut point (`fine_tune_cut`), its stored run trained again. The stages before the cut are the same frozen ones in both, so the rows part where fine-tuning starts.

# %%
{{parameters}}

# %%
from IPython.display import display
from functions.analysis import plots
from functions.notebooks import backbone as study
from functions.notebooks.study import use_output_root
use_output_root(output_root)
cut_study = study.studies(data, backbone, ["F"], folder)["F"]
records = study.clustering(cut_study, fine_tune_cut, max_images)
print(len(records), "clustering records")

# %% [markdown]
# ## ARI per stage
# Rising values mean deeper stages separate the classes better; where the fine-tuned row rises above the ImageNet one, fine-tuning has made the features of this task's classes.

# %%
table = study.clustering_table(records)
display(table.round(3))
figure = plots.ari_profile(table, f"{folder}: K-means on the {data} test images, per stage")
plots.save_figure(figure, folder, f"ari_{backbone}", "real")
display(figure)

# %% [markdown]
# ## The other scores
# Normalised mutual information and cluster accuracy (each cluster matched one-to-one to a class) per stage, for the same clusterings.

# %%
for score in ("nmi", "cluster_acc"):
    print(score)
    display(study.clustering_table(records, score).round(3))
