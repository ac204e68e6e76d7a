"""ablate: architecture ablations of small image CNNs, one command per study.

The public API: `run` a study and `load` or `report` its results from Python (a notebook),
and the calls a plugin registers through (ablate's own studies, models, tasks and datasets
are registered with the same calls). Importing it imports no torch; the calls import what
they need when called.

    import ablate

    runs = ablate.run("linearity", epochs=10, dataset="fashion-mnist")  # as `ablate linearity ...`
    summary = ablate.report("results/linearity.parquet")
    every_study = ablate.load("results/")

    @ablate.register_study("kernel", sizes="Kernel sizes, comma-separated.")
    def kernel(sizes: str = "3,5,7") -> ablate.Study:
        ...
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ablate")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

# name -> (module, attribute): loaded on first use, so that `import ablate` stays light
_PUBLIC = {
    "register_study": ("ablate.study.studies", "register_study"), "Study": ("ablate.study.studies", "Study"),
    "UsageError": ("ablate.errors", "UsageError"),
    "register_model": ("ablate.arch", "register_model"),
    "register_task": ("ablate.training.tasks", "register_task"), "Task": ("ablate.training.tasks", "Task"),
    "Metric": ("ablate.metrics", "Metric"), "accuracy": ("ablate.metrics", "accuracy"), "psnr": ("ablate.metrics", "psnr"),
    "register_dataset": ("ablate.data.datasets", "register_dataset"),
    "register_executor": ("ablate.execution.executors", "register_executor"), "Progress": ("ablate.execution.progress", "Progress"),
    "started": ("ablate.execution.progress", "started"), "batch_reporter": ("ablate.execution.progress", "batch_reporter"),
    "plugin_modules": ("ablate.plugins", "modules"), "load_plugins": ("ablate.plugins", "load_named"),
    "run": ("ablate.api", "run"), "report": ("ablate.api", "report"), "load": ("ablate.results.folder", "load"),
}
__all__ = ["__version__", *_PUBLIC]


def __dir__() -> list[str]:
    return sorted(__all__)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ablate' has no attribute {name!r}")
    import importlib

    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)
