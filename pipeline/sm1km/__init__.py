"""sm1km: gap-free global 1 km daily surface soil moisture.

Python API: ``from sm1km import Pipeline, RunConfig``.
"""

from sm1km._version import __version__

__all__ = ["Pipeline", "RunConfig", "__version__"]


def __getattr__(name):  # lazy: `import sm1km` stays cheap for the CLI
    if name == "Pipeline":
        from sm1km.pipeline import Pipeline

        return Pipeline
    if name == "RunConfig":
        from sm1km.config import RunConfig

        return RunConfig
    raise AttributeError(name)
