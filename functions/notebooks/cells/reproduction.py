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
# Read on the tables above:
#
# - **Upstream's baselines were starved.** From 1% to 50% of the data its baseline sits far below ours (MNIST: 0.813 against 0.938 at 1%, 0.795 against 0.978 at 10%), and at 10% below its own 1% value: with batches of 4,096, a run on 2,645 images makes one optimiser step per epoch and early stopping ends it long before it converges. Pretrained blocks start from useful features and need fewer steps, so upstream's large gains at 1-50% (MNIST +0.12 to +0.17) measure mostly how far its baseline was from convergence. With every epoch making at least 100 steps, our baselines converge and the gains that remain (MNIST +0.016 at 1%, +0.005 at 10%) are what transfer is worth there.
# - **With the least data both studies agree.** At 0.1% (25 images of MNIST 5-9, 15 of FashionMNIST's three classes) the best cut gains +0.13 on MNIST here and +0.16 upstream, +0.05 and +0.07 on FashionMNIST: transferred features help most where the data cannot teach them.
# - **Where to cut moves with the data.** Upstream's best cut is 4 at every small fraction. Here it moves from the deepest cuts at the smallest fractions (MNIST: 6 at 0.1%, 5 at 1%) towards shallower ones as data grows, and with all the data the cut points end within 0.01 (MNIST) to 0.02 (FashionMNIST) of each other, the last (cut 6, only the head trained) the worst.
# - **Across datasets transfer is worth less, and a deep cut costs more.** With 0.1% of the data the best cut gains +0.011 from MNIST to FashionMNIST here (+0.034 upstream), within the spread of the repeats (standard deviation about 0.03), and +0.068 from FashionMNIST to MNIST (+0.117 upstream): less than within one dataset (MNIST +0.133), and in both studies FashionMNIST's features carry over to MNIST better than the reverse. With all the data the cross-dataset cut points end furthest apart (0.066 and 0.042 here, 0.045 in both folders upstream): every frozen layer learnt on the other dataset costs accuracy that the target data would have bought, cut 6 the most (from MNIST to FashionMNIST 0.827 against the baseline's 0.892).
# - **The other modes (FashionMNIST, F and FT).** Fine-tuning the layers after the cut (F) behaves like re-initialising them: +0.057 at 0.1% here (+0.065 upstream), +0.003 with all the data (+0.013 upstream). Keeping only the pretrained blocks before the cut and a new head (FT) gains the most with the least data here (+0.087 at 0.1%, cut 3; upstream +0.055, cut 5), and with all the data every truncated network ends below our baseline (the best by 0.004). Upstream's full-data gains of +0.013 in all three modes stand on one baseline that reached 0.947 against our 0.965: they again measure a baseline short of convergence.
# - **The network.** The quick network has 16 channels where upstream's has 64; with all the data both baselines reach the same accuracy on MNIST (0.989 here, 0.991 upstream), so the narrower network does not explain the differences above.
# - **The evaluation split.** Upstream's accuracy at 100% includes the images its runs trained on, so it is not a held-out accuracy; ours is. That matters at full data, not at the small fractions, where nearly every image upstream evaluated on was unseen by the run.
