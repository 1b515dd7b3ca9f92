"""sm1km: gap-free global 1 km daily surface soil moisture.

Python API: ``from sm1km import Pipeline, RunConfig``.
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "RunConfig", "__version__"]


def __getattr__(name):  # lazy: `import sm1km` stays cheap for the CLI
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    raise AttributeError(name)
