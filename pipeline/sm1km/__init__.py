"""sm1km: gap-free global 1 km daily surface soil moisture."""

__version__ = "0.1.0"
