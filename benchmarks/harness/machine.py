"""What a benchmark ran on: cores, memory, CPU model, load, package versions, GPU presence."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = ("sm1km", "numpy", "pandas", "xarray", "zarr", "numcodecs", "dask", "distributed", "xgboost",
            "rasterio", "h5py", "fsspec", "s3fs", "psutil")


def cpu_model() -> str:
    """The CPU model name (Linux ``/proc/cpuinfo``; else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (affinity / cgroup quota aware where the OS tells)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2 CPU quota
        with open("/sys/fs/cgroup/cpu.max", encoding="utf-8") as f:
            quota, period = f.read().split()
        if quota != "max":
            n = max(1, min(n, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return n


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux/macOS
        return None


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, OS and Python of this machine, plus the current load average."""
    import psutil

    vm = psutil.virtual_memory()
    return {
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(vm.total / 2**30, 2),
        "memory_available_gib": round(vm.available / 2**30, 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": loadavg(),
    }


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def gpu_info() -> dict[str, Any]:
    """Whether a CUDA GPU is usable for XGBoost here: ``{"available": bool, "reason"/"name": ...}``."""
    info: dict[str, Any] = {"available": False}
    try:
        import xgboost as xgb

        cuda_build = bool(xgb.build_info().get("USE_CUDA"))
    except Exception:  # pragma: no cover
        cuda_build = False
    info["xgboost_cuda_build"] = cuda_build
    smi = shutil.which("nvidia-smi")
    name = None
    if smi:
        try:
            r = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            name = r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
        except (OSError, subprocess.SubprocessError):
            name = None
    if name is None:
        info["reason"] = ("no NVIDIA GPU on this machine (no nvidia-smi / no device); the device machine of this "
                          "project was not lent to this benchmark run, so predict_device=cuda is not measured")
        return info
    info["name"] = name
    if not cuda_build:
        info["reason"] = f"GPU present ({name}) but this xgboost build has no CUDA support"
        return info
    info["available"] = True
    return info
