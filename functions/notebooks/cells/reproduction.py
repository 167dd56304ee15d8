# %% [markdown]
# # Does the upstream study's answer hold here?
# The upstream study trained its network (64 channels, batches of 4,096, up to 40 epochs) at 0.1%, 1%, 10%, 50% and 100% of the target data and published, per fraction and cut point, the mean test accuracy of mode FR (for FashionMNIST also of F and FT). This notebook sets our `range` profile's results (`make range`) beside those tables, for every folder where both exist. Two differences to keep in mind while reading:
#
# - **Network and budget.** Ours is the quick network (16 channels, batches of 64, at most 10 epochs, early stopping after 3 without improvement), and every epoch makes at least 100 optimiser steps. Upstream's batches of 4,096 give a run on 10% of MNIST 5-9 (2,645 images) a single optimiser step per epoch, so its small-data runs, the baseline first, stop far from convergence.
# - **Evaluation split.** Upstream's "test" accuracy was measured on the training split of the target classes (the images the subsets were drawn from); ours on the official test split.

# %%
profile = "range"  # whose results are set beside the upstream tables
output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis import plots, reproduction
from functions.notebooks import study
study.use_output_root(output_root)
tables = study.reproduction(profile)
print('compared:', ', '.join(f'{f} {s} {m}' for f, s, m in tables))

# %% [markdown]
# ## Per folder and fraction of data
# For each study: the baseline's mean test accuracy, the best cut point (highest mean), its gain over the baseline, and the spread between the cut points' means (best minus worst). A positive gain means the transferred layers help at that fraction.

# %%
for (folder, setup, mode), table in tables.items():
    print(f'{folder} {setup}, mode {mode}')
    display(table.round(3))

# %% [markdown]
# ## The same, drawn
# Top: the baselines. Bottom: the best cut point's gain over its own study's baseline. Where the blue line (ours) sits below the orange one (upstream) at small fractions, part of upstream's gain came from a baseline that had not finished training.

# %%
figure = plots.reproduction_figure(tables)
plots.save_figure(figure, '.', f'reproduction_{profile}')
display(figure)

# %% [markdown]
# ## Which findings hold?
# Two findings carry the upstream study: transfer helps most with the least data, and with all the data it stops helping. Each is tested per folder and study, with a margin of one point of accuracy.

# %%
import pandas as pd
verdicts = {(f'{f} {s} {m}', study_name): v for (f, s, m), table in tables.items()
            for study_name, v in reproduction.findings(table).items()}
pd.DataFrame.from_dict(verdicts, orient='index')

# %%
for key, table in tables.items():
    print(reproduction.findings_text(key, table))

# %% [markdown]
# ## Why they differ
# Written from the tables above:

# %%
from IPython.display import Markdown
Markdown('\n'.join(reproduction.differences_text(tables)))

# %% [markdown]
# - **The evaluation split.** Upstream's accuracy at 100% includes the images its runs trained on, so it is not a held-out accuracy; ours is. That matters at full data, not at the small fractions, where nearly every image upstream evaluated on was unseen by the run.

# %% [markdown]
# ## On a real network: ImageNet EfficientNet-Lite0 on clipart drawings and stamps
# The same questions asked of the study folders of an ImageNet network (`Clipart/`, `Clipart_to_Stamps/`: `make real`), set beside our small-CNN studies of the `range` profile. Per study: the best cut point's gain over the baseline with the least and with all the data, where that cut sits, and the two findings above with the same margin. The bullets are written from the table.

# %%
from functions.analysis.reproduction import across_networks, across_networks_text, reinitialising_cost
from functions.notebooks import backbone
from functions.notebooks.templates import IMAGE_FOLDERS, RANGE_MODES
headlines = {**study.study_headlines(RANGE_MODES, profile),
             **backbone.backbone_headlines({folder: spec.backbone for folder, spec in IMAGE_FOLDERS.items()})}
networks = across_networks(headlines)
display(networks.round(3))
display(Markdown('\n'.join(f'- {line}' for line in across_networks_text(networks))))

# %% [markdown]
# Re-initialising the layers after the cut (FR) against keeping their pretrained weights (F), per folder that has both: the best cut's gain in F minus FR's (above 0: the pretrained weights of the later layers are worth keeping).

# %%
display(reinitialising_cost(networks).round(3))
