# %% [markdown]
# # Which pretrained model for my task?
# A zoo of pretrained models (three ImageNet EfficientNet-Lite networks and study CNNs of depths 2-8 and widths 8-64 pretrained on MNIST, FashionMNIST and their class subsets) meets a bank of target tasks (class subsets of MNIST, FashionMNIST and the 8 x 8 digits, 2 to 10 classes, 20 to 2,000 training images). For every (model, task) pair the records hold the measured transferability (test accuracy of a new linear head on the frozen features, averaged over training draws) and every transferability score computed before any training. `python -m functions zoo build` (`make zoo`) measures them.

# %%
recommender = "gradient boosting"  # the learned recommender; or "linear regression", a score
example_task = "digits:1,2,3,4,7:200"  # <dataset>:<classes>:<n> (a task of the bank: measured too)
budget_gflops = 0.1  # the cost per image a choice may spend
image_bank = "clipart_stamps"  # tasks of other images' classes (python -m functions zoo build --data clipart stamps)
output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository

# %%
# %matplotlib inline
from IPython.display import display
from functions.analysis.model_zoo import files, intervals, recommenders
from functions.analysis import plots
from functions.notebooks import study, zoo
study.use_output_root(output_root)
records = files.load_records()
print(f"{records['model'].nunique()} models x {records['task'].nunique()} tasks = {len(records)} records")
display(records.drop_duplicates('model')[list(files.MODEL_COLUMNS)].set_index('model'))

# %% [markdown]
# ## The transferability matrix
# Each cell is how far one model's linear-probe test accuracy (row) falls below the best model's on one task (column); a dot marks the winner of each column. Tasks are grouped by dataset and labelled by number of classes (c) and training images; models are ordered by family and pretraining accuracy. A row of dots is a model that wins many tasks; what matters for recommendation is the order of the models within a column, which is what this picture shows (a task's difficulty is taken out).

# %%
figure = files.matrix_figure(records)
plots.save_figure(figure, 'zoo', 'transferability_matrix')
display(figure)

# %% [markdown]
# ## Recommenders
# Each recommender ranks the models of a task; the ranking is compared with the measured one by the weighted Kendall tau (disagreements among the best models weigh most), the top-1 hit rate (the recommended model is a measured best) and the regret (accuracy lost by taking the recommended model instead of the best). The learned recommenders are trained without the task (leave one task out) or without its whole dataset (leave one dataset out); the scores and the two baselines every score must beat, the model's pretraining accuracy (ImageNet top-1 for the ImageNet networks) and its parameter count (bigger ranks higher), need no training. Each mean tau has a 95% bootstrap interval over tasks; the sentence compares the learned recommender with LogME and the baselines task by task, each difference with its interval.

# %%
table = zoo.evaluation(records)  # two decimals: float rounding differs between kinds of CPU
display(table.round(2))
print(zoo.verdict(table))

# %% [markdown]
# ## Where the learned recommender fails
# Its weighted tau per task, leave one dataset out, averaged by dataset and number of classes, then the five tasks it ranks worst.

# %%
failures = recommenders.per_task(records, recommender)
display(failures.groupby(['source_dataset', 'num_classes'])[['weighted_tau', 'top1_hit', 'regret']].mean().round(2))
display(failures.sort_values(['weighted_tau', 'task']).head(5).round(2))

# %% [markdown]
# ## How sure is a predicted accuracy?
# Gradient-boosted trees predict each model's linear-probe accuracy on a task from the same metadata and scores, and split conformal prediction gives it an interval: the half-width is the rank-(n + 1) x level error among the errors the same fit made on tasks it never saw. The coverage below is measured on held-out groups: each fold of tasks (or each dataset) is predicted by a fit without it and checked against a half-width calibrated on the other groups' errors only.

# %%
coverage = intervals.coverage(records)
display(coverage.round(3))
print(intervals.coverage_verdict(coverage))

# %% [markdown]
# ## On colour drawings and cut-outs
# The same zoo on tasks drawn from the classes of the `clipart` drawings and the `stamps` cut-outs as the bank draws its own (2 to 10 of their 12 classes, at most as many training images per class as their smallest class has: 10 and 13 for the clipart, 9 for the stamps), each network reading them at its own input size (grey at 28 px for the study CNNs, colour at 224-260 px for the ImageNet networks). First, which family's models win these tasks; then the recommenders, evaluated leaving tasks or a dataset out within these tasks and, as a user's own images meet them, trained on the built-in bank alone; then the built-in bank's intervals checked on these tasks' measured accuracies; last, the coverage with these tasks in the bank beside the built-in ones (five datasets), which is what `recommend-model` learns from and calibrates on (leaving out any task of the user's dataset).

# %%
image_records = files.load_records(files.records_path(image_bank))
print(f"{image_records['model'].nunique()} models x {image_records['task'].nunique()} tasks of "
      f"{', '.join(image_records['source_dataset'].unique())}")
families = zoo.family_wins(image_records)
display(families.round(3))
print(zoo.family_verdict(families))
figure = files.matrix_figure(image_records)
plots.save_figure(figure, 'zoo', f'transferability_matrix_{image_bank}')
display(figure)

# %%
image_table = zoo.evaluation(image_records, records)
display(image_table.round(2))
print(zoo.verdict(image_table, recommenders.FROM_BANK))
image_coverage = intervals.coverage_on(records, image_records)
display(image_coverage.round(3))
print(intervals.coverage_verdict(image_coverage))

# %%
every_bank = files.load_every_bank()
every_coverage = intervals.coverage(every_bank)
display(every_coverage.round(3))
print(intervals.coverage_verdict(every_coverage))

# %% [markdown]
# ## Feature extraction or fine-tuning, and what each costs
# On a sample of each bank's tasks (per dataset, four of its tasks at its fewest training images per class, spread over their class counts), every model is transferred three ways on the same training draw: feature extraction at its last stage (the linear probe above), feature extraction at the stage whose probe scores best on validation images (pool training images outside the draw), and fine-tuning (its last two stages and a new head, stopped early on the same validation images), each charged by the same cost meter for everything adapting it to the task takes. `python -m functions zoo ways` (and `--data clipart stamps`) measures them.

# %%
from functions.analysis.model_zoo import ways
measured = files.load_every_ways()
print(f"{measured['model'].nunique()} models x {measured['task'].nunique()} tasks, each way: "
      + ", ".join(f"{n} tasks of {d}" for d, n in measured.groupby('source_dataset')['task'].nunique().items()))
for way in ('FE-layer', 'FT'):
    by_family = ways.gains(measured, way=way)
    display(by_family.round(3))
    print(ways.verdict(by_family))
display(ways.gains(measured, by='source_dataset').round(3))
layers = measured[measured['way'] == 'FE-layer']
display(layers.groupby(['family', 'layer']).size().unstack(fill_value=0))

# %% [markdown]
# The other ways' accuracies are predicted as the probe's is, from the same metadata and scores, by gradient-boosted trees fitted on the tasks measured that way, with conformal intervals from their held-out errors. Their coverage, measured on tasks and datasets the fit never saw:

# %%
for way in ('FE-layer', 'FT'):
    way_coverage = intervals.coverage(ways.measured_way(every_bank, measured, way))
    print(ways.WAY_NAMES[way])
    display(way_coverage.round(3))
    print(intervals.coverage_verdict(way_coverage))

# %% [markdown]
# ## A recommendation
# The zoo ranked for one task by the recommender trained on every other task of the banks, with the measured accuracy where the bank holds the task; beside it each model's predicted accuracy with its 90% interval (calibrated leaving whole datasets out, as a user's own images are a new dataset) and its cost in GFLOPs per image. Then every model each way: predicted accuracy with its interval, what adapting costs per training image, and whether it is on the Pareto set (no cheaper choice is predicted more accurate). `python -m functions recommend-model --data PATH --budget-gflops <GFLOPs>` prints the same for your images and the choice under a budget.

# %%
recommendation = zoo.recommend_model(example_task, recommender)
display(recommendation.round(3))
candidates = recommendation.attrs['candidates']
display(candidates[candidates['pareto']].sort_values('adapt_gflops_per_image').round(4))
choice = ways.choose_within(candidates, budget_gflops)
known = choice['measured_accuracy']
print(f"Within {budget_gflops:g} GFLOPs per training image: {choice['model']} by {ways.WAY_NAMES[choice['way']]} "
      f"(predicted {choice['accuracy_predicted']:.3f} [{choice['low']:.3f}, {choice['high']:.3f}]; "
      + (f"measured {known:.3f})" if known == known else "the task was not measured this way)"))
