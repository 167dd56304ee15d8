"""Running experiments: the results store, source models, sweeps and papermill grids."""
