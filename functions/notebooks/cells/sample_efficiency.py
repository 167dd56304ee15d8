# %% [markdown]
# # {{folder}}: how few target samples does a linear head need?
# The pretrained source network is frozen and its pooled last conv activation is the feature vector. Target images arrive one small batch at a time and only a linear head is updated. After every evaluation step the head is scored on the whole validation set; the **milestone** is the number of samples seen when the accuracy has stayed at or above the threshold for `window` consecutive evaluations. **Relative efficiency** is the baseline's milestone (one Adam step per batch) divided by the method's: 10 means the method needs a tenth of the samples.

# %%
folder = '{{folder}}'
setup = '{{setup}}'  # whose pretrained source model extracts the features
tasks = ["binary", "all"]  # the first two target classes, and all of them
methods = None  # None: every head-update method; the first is the baseline (adam)
seeds = 10  # seeded streams per method: medians and IQRs are over these
batch_size = 1  # samples per update
max_samples = 1000  # stream length
evaluation_frequency = 1  # validate after this many samples
threshold = 0.8  # milestone: validation accuracy at or above this ...
window = 10  # ... for this many consecutive evaluations
output_root = None  # None: $TRANSFER_OUTPUT_ROOT, else this repository's study folders

# %%
# %matplotlib inline
from IPython.display import Image, display
from functions.efficiency import benchmark, heads
from functions.notebooks import study
study.use_output_root(output_root)
results = {task: benchmark.run_study(
    folder, setup, task, methods=tuple(methods or heads.METHODS), seeds=seeds, batch_size=batch_size,
    max_samples=max_samples, evaluation_frequency=evaluation_frequency, threshold=threshold,
    window=window, progress=False, log=lambda *_: None) for task in tasks}

# %% [markdown]
# ## Milestones per method
# Median and inter-quartile range of the milestone over the seeds that reached it, how many seeds never reached it within the stream, the median relative efficiency (over seeds where both the method and the baseline reached it) and the median final accuracy. Results files are resumed: a re-run with the same parameters reads them.

# %%
for task, result in results.items():
    params = result.params
    print(f"{task}: {params['dataset']} classes {params['classes']}, {params['pool_size']} samples to "
          f"stream, {params['val_size']} to validate")
    print(benchmark.format_summary(result.table), end='\n\n')

# %% [markdown]
# ## Learning curves and milestones
# First figure of each task: median validation accuracy (band: IQR over seeds) against the samples seen, log x; the dashed line is the threshold. Second: the milestones per method, with the number of seeds that never reached it under each box. Curves that rise earlier and boxes that sit lower mean fewer target samples are needed.

# %%
for task, result in results.items():
    for figure in result.figures:
        display(Image(filename=str(figure)))
