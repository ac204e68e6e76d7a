"""A study's execution: the runner, checks before training, --pack auto, --dry-run, executors, Dask."""
