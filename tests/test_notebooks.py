"""The notebooks of ``deploy/notebooks/`` run, executed by a real Jupyter kernel (``nbclient``) on a
tiny synthetic world.

* ``local.ipynb``: its ``parameters`` cell set papermill-style (a cell tagged ``injected-parameters``
  right after it) to the tiny world, the pipeline run on a ``LocalCluster``, the master read with
  xarray and plotted.
* ``reprocess.ipynb`` (Kubernetes): its ``parameters`` set to the finished tiny run and its cell
  tagged ``cluster`` (``make_client`` of a new DaskCluster) swapped for a ``LocalCluster``; every
  other cell as committed: the spec preview, the pipeline in a background thread, the progress bar
  (ipywidgets), the result, the map of the master on a local store.

Skipped, with the reason, only when no Jupyter kernel can start on this machine.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sm1km.config import RunConfig
from sm1km.testing.worlds import TINY_OPTIONS, tiny_world

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "deploy" / "notebooks"
KERNEL = "sm1km-test"
CELL_TIMEOUT_S = 300
STAGES = ["ingest", "fuse", "train", "downscale", "aggregate"]

#: what replaces reprocess.ipynb's cell tagged ``cluster`` (same names: ``session``, ``client``)
LOCAL_CLUSTER_CELL = """
import contextlib

from distributed import Client, LocalCluster

session = contextlib.ExitStack()
local_cluster = session.enter_context(LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB",
                                                   dashboard_address=":0"))
client = session.enter_context(Client(local_cluster))
client
""".strip()


def _kernel_manager(kernel_dirs: Path):
    """A kernel of this interpreter (sys.executable: the test's environment, whatever kernels the
    machine's Jupyter paths list)."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dirs)]))


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory) -> Path:
    """A kernelspec for this interpreter; the module is skipped when no kernel can start here."""
    d = tmp_path_factory.mktemp("kernels")
    (d / KERNEL).mkdir()
    (d / KERNEL / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sm1km tests", "language": "python"}))
    km = _kernel_manager(d)
    try:
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        kc.stop_channels()
    except Exception as exc:  # no ZeroMQ sockets, no ipykernel, a sandbox that forbids subprocesses...
        pytest.skip(f"no Jupyter kernel can start on this machine ({type(exc).__name__}: {exc})")
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return d


def with_parameters(nb, **params):
    """A copy of ``nb`` with ``params`` set as papermill does: a cell tagged ``injected-parameters``
    right after the cell tagged ``parameters``."""
    nb = copy.deepcopy(nb)
    (i,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    cell = nbformat.v4.new_code_cell("# Parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    return nb


def swap_tagged(nb, tag: str, source: str):
    """``nb`` with the source of its one cell tagged ``tag`` replaced."""
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    cell.source = source
    return nb


def execute(nb, cwd: Path, kernel_dirs: Path) -> float:
    """Run every cell of ``nb`` in a fresh kernel started in ``cwd`` (raises on the first cell that
    fails); returns the seconds it took."""
    t0 = time.perf_counter()
    NotebookClient(nb, km=_kernel_manager(kernel_dirs), timeout=CELL_TIMEOUT_S,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return time.perf_counter() - t0


def outputs_of(nb, needle: str) -> list[dict]:
    """Outputs of the code cells whose source contains ``needle``."""
    return [o for c in nb.cells if c.cell_type == "code" and needle in c.source for o in c.get("outputs", [])]


def text_of(outputs) -> str:
    return "".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)


@pytest.fixture(scope="module")
def local_run(kernel_dirs, tmp_path_factory):
    """local.ipynb executed on the tiny world, its stores in a fresh root: (config, run.yaml, notebook, s)."""
    tmp = tmp_path_factory.mktemp("nb-local")
    world = tiny_world(tmp_path_factory.getbasetemp())
    cfg = world.config(str(tmp / "store"))
    run_yaml = world.write_run_yaml(cfg, tmp / "run")
    nb = with_parameters(nbformat.read(NOTEBOOKS / "local.ipynb", as_version=4), run_yaml=str(run_yaml),
                         stages=STAGES, stage_options={"train": TINY_OPTIONS["train"]}, n_workers=2,
                         threads_per_worker=1, memory_limit="1GiB")
    seconds = execute(nb, tmp, kernel_dirs)
    print(f"local.ipynb executed in {seconds:.1f} s")
    return cfg, run_yaml, nb, seconds


def test_local_notebook_runs_the_pipeline_and_plots_the_master(local_run):
    cfg, _, nb, _ = local_run
    ran = text_of(outputs_of(nb, "pipe.stage("))
    for stage in STAGES:
        assert f"\n{stage} " in "\n" + ran, ran
    assert "Dask dashboard: http" in text_of(outputs_of(nb, "LocalCluster("))
    import xarray as xr

    master = xr.open_zarr(cfg.store.url("master.zarr"))
    assert master.sizes["time"] == len(cfg.dates()) and master.sm.notnull().any()
    assert "sm" in text_of(outputs_of(nb, "xr.open_zarr("))  # the dataset's repr
    plots = [o for o in outputs_of(nb, "plt.subplots(") if "image/png" in o.get("data", {})]
    assert len(plots) == 1, "the map + time series figure"


def test_reprocess_notebook_runs_with_its_cluster_cell_swapped_for_a_local_one(local_run, kernel_dirs, tmp_path):
    cfg, run_yaml, _, _ = local_run
    settings = {k: v for k, v in RunConfig.from_yaml(run_yaml).model_dump(mode="json").items() if k != "cluster"}
    nb = nbformat.read(NOTEBOOKS / "reprocess.ipynb", as_version=4)
    nb = swap_tagged(with_parameters(nb, settings=settings, stages=["ingest", "fuse", "downscale", "aggregate"]),
                     "cluster", LOCAL_CLUSTER_CELL)
    master_meta = Path(cfg.store.url("master.zarr"), "zarr.json")
    stamp = master_meta.stat().st_mtime_ns
    seconds = execute(nb, tmp_path, kernel_dirs)
    print(f"reprocess.ipynb (LocalCluster) executed in {seconds:.1f} s")
    # the spec it previews is for the Kubernetes cluster of its parameters
    assert "ghcr.io/sm1km/sm1km" in text_of(outputs_of(nb, "build_cluster_spec"))
    assert RunConfig.from_yaml(tmp_path / "reprocess.yaml").store.root == cfg.store.root
    # progress: an ipywidgets bar
    progress = outputs_of(nb, "progress(")
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in progress), progress
    # the finished run: every stage found its work done, the master untouched, its map drawn
    assert "fuse" in text_of(outputs_of(nb, "run.result()"))
    assert master_meta.stat().st_mtime_ns == stamp
    assert any("image/png" in o.get("data", {}) for o in outputs_of(nb, "xr.open_zarr("))
