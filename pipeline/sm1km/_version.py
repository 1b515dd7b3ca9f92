"""The package version (one place: pyproject reads it, ``sm1km --version`` prints it, stores record it)."""

__version__ = "0.1.0"
