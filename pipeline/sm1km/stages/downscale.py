"""``sm1km downscale``: apply the model shard by shard to write the 1 km master (``master.zarr``).

Plan: one task per master shard = (tile of ``grid.tile_cells``² coarse cells) × (time block of
``grid.time_block_days`` days). A task reads the fused 25 km block and the 1 km predictor block,
builds features (``features.build_features`` into one preallocated float32 buffer), predicts
(``LoadedModel.predict`` / ``predict_uncertainty``: XGBoost in-place prediction, clipped to the
physical range), masks sea (fused ``source_flag`` 0 or NaN; 1 km water pixels by land cover),
packs to int16 (``encoding``) and
writes its shard — the only writer of that shard — then marks the shard in the ledger.

* **Resumable:** shards in the ledger (``<root>/_ledger/master.zarr/``) are skipped; a killed run
  re-run gives a byte-identical store (``SOURCE_DATE_EPOCH`` fixes the timestamps). Consolidated
  metadata is written last, once every shard is done.
* **Bounded memory:** tasks are O(shard): the driver only holds shard specs (a few integers each),
  generated lazily, and keeps at most ``max_in_flight`` tasks submitted (``as_completed`` window).
* **Model once per worker:** a task carries only the model URL and its sha256; the booster lives in
  a per-process cache (:func:`_worker_model`) keyed by (url, sha256, threads, device), so each
  worker process parses it once. :func:`model_loads` tells how many times this process did.

:func:`truth_metrics` scores the product against the synthetic world's 1 km truth (chunk-wise sums).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from sm1km.storage import master
from sm1km.runtime.result import StageResult
from sm1km.storage import store
from sm1km.core.encoding import FILL, encode_int16
from sm1km.errors import InputError, ModelError, Sm1kmError, StoreError
from sm1km.core.grid import FineGrid, coarse_lat, tiles
from sm1km.runtime.client import stage_client

log = logging.getLogger(__name__)

#: rows of one feature batch (pixel-days); 2**19 rows × 23 features × 4 B ≈ 48 MB
FEATURE_BATCH_ROWS = 1 << 19
#: ``land_cover`` codes that are open water at 1 km (IGBP / MODIS MCD12Q1 LC_Type1: 17 = water bodies):
#: fill there, like sea cells at 25 km — soil moisture is undefined over water.
WATER_LAND_COVER = (17,)


# --------------------------------------------------------------------------------------------
# task plan
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One master shard: time indices [t0, t1) of the run and a tile (coarse indices in the region)."""

    t0: int
    t1: int
    r0: int  # coarse rows/cols relative to the region
    r1: int
    c0: int
    c1: int
    factor: int

    @property
    def fine(self) -> tuple[slice, slice]:
        f = self.factor
        return slice(self.r0 * f, self.r1 * f), slice(self.c0 * f, self.c1 * f)

    @property
    def region(self) -> dict[str, slice]:
        y, x = self.fine
        return {"time": slice(self.t0, self.t1), "lat": y, "lon": x}

    @property
    def key(self) -> str:
        return store.region_key(**self.region)


def shard_specs(cfg) -> Iterator[ShardSpec]:
    """All master shards of a run, lazily, tile-major (a tile's time blocks follow each other)."""
    region = cfg.coarse_region
    n_days = cfg.period.n_days
    for tile in tiles(region, cfg.grid.tile_cells):
        rs, cs = tile.coarse_slices(region)
        for tb in master.time_blocks(n_days, cfg.grid.time_block_days):
            yield ShardSpec(tb.start, tb.stop, rs.start, rs.stop, cs.start, cs.stop, cfg.grid.factor)


def n_shards(cfg) -> int:
    g = cfg.grid
    r = cfg.coarse_region
    return (-(-r.n_rows // g.tile_cells)) * (-(-r.n_cols // g.tile_cells)) * (-(-cfg.period.n_days // g.time_block_days))


# --------------------------------------------------------------------------------------------
# bounded task execution (shared by downscale, truth metrics and aggregate)
# --------------------------------------------------------------------------------------------
_ERROR_TAG = "__sm1km_error__"


def _call(fn: Callable, item, ctx):
    """Run a task; a user-fixable error comes back as a plain tuple (Sm1kmError is not picklable)."""
    try:
        return fn(item, ctx)
    except Sm1kmError as exc:
        return (_ERROR_TAG, type(exc).__name__, exc.where, exc.problem, exc.fix)


def _raise_if_error(result):
    if isinstance(result, tuple) and result and result[0] == _ERROR_TAG:
        from sm1km import errors

        cls = getattr(errors, result[1], errors.Sm1kmError)
        raise cls(result[2], result[3], result[4])
    return result


def default_window(client) -> int:
    """Tasks in flight: twice the cluster's threads (enough to keep it busy, O(1) in the region)."""
    if client is None:
        return 1
    try:
        return max(2, 2 * sum(client.nthreads().values()))
    except Exception:  # pragma: no cover - scheduler without nthreads
        return 8


def run_bounded(client, fn: Callable, items: Iterable, ctx, *, window: int | None = None,
                name: str = "task") -> Iterator[Any]:
    """Yield ``fn(item, ctx)`` for every item, at most ``window`` tasks submitted at a time.

    ``client=None`` runs in this process (synchronous). Results come in completion order.
    """
    items = iter(items)
    if client is None:
        for item in items:
            yield _raise_if_error(_call(fn, item, ctx))
        return
    from distributed import as_completed

    window = window or default_window(client)
    token = uuid.uuid4().hex[:8]
    ac = as_completed(loop=client.loop)  # this client's loop, not the default client's (there may be none)
    n = 0

    def submit(item) -> None:
        nonlocal n
        key = getattr(item, "key", str(n))
        ac.add(client.submit(_call, fn, item, ctx, key=f"{name}-{key}-{token}", pure=False, retries=1))
        n += 1

    for item in items:
        submit(item)
        if ac.count() >= window:
            break
    try:
        for fut in ac:
            result = fut.result()
            fut.release()
            nxt = next(items, None)
            if nxt is not None:
                submit(nxt)
            yield _raise_if_error(result)
    finally:
        for fut in list(ac.futures):
            fut.cancel()


# --------------------------------------------------------------------------------------------
# the model, once per worker process
# --------------------------------------------------------------------------------------------
_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple, Any] = {}
_MODEL_LOADS = 0


def model_loads() -> int:
    """How many times this process loaded (parsed and verified) a model for downscaling."""
    return _MODEL_LOADS


def _worker_model(url: str, sha256: str, storage_options: Mapping[str, Any], n_threads: int, device: str):
    """The LoadedModel for (url, sha256), loaded at most once per process."""
    global _MODEL_LOADS
    key = (url, sha256, int(n_threads), device)
    with _MODEL_LOCK:
        m = _MODELS.get(key)
        if m is None:
            from sm1km.storage.model import load_model

            m = load_model(url, storage_options, n_threads=n_threads, device=device)
            if m.sha256 != sha256:
                raise ModelError(url, f"the model changed during the run (sha256 {m.sha256[:12]}… instead of "
                                 f"{sha256[:12]}…).", "re-run `sm1km downscale` (it resumes) once training is done.")
            _MODELS[key] = m
            _MODEL_LOADS += 1
        return m


# --------------------------------------------------------------------------------------------
# one shard
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DownscaleContext:
    """What every task needs besides its shard: URLs, offsets and the model's identity (small)."""

    root: str
    master_url: str
    fused_url: str
    predictors_url: str
    storage_options: dict
    model_url: str
    model_sha256: str
    n_threads: int
    device: str
    with_uncertainty: bool
    fused_t0: int        # index of the run's first day in fused.zarr
    predictors_t0: int   # ... in inputs/predictors.zarr
    start: str           # first day of the run (ISO)
    run_token: str = ""  # one per make_context: the stores a worker opened are reused for it ("" = never)


#: stores opened by this process for a run (``run_token``): a task reuses what its worker parsed for
#: an earlier task (consolidated metadata, coordinates: ≈ 15 ms of a ≈ 0.7 s task). Bounded, and
#: keyed by the run, so a later run (which may follow a re-ingest) opens them afresh.
_OPENED: dict[tuple[str, str, str], Any] = {}
_OPENED_MAX = 8
_OPENED_LOCK = threading.Lock()


def _opened(kind: str, url: str, ctx: DownscaleContext):
    """``store.open_dataset`` (``kind="dataset"``) or a writable ``store.open_group`` (``"group"``)
    of ``url``, cached per process for ``ctx.run_token``."""
    def open_it():
        if kind == "dataset":
            return store.open_dataset(url, ctx.storage_options)
        return store.open_group(url, ctx.storage_options, mode="r+")

    if not ctx.run_token:
        return open_it()
    key = (ctx.run_token, kind, url)
    with _OPENED_LOCK:
        hit = _OPENED.get(key)
    if hit is not None:
        return hit
    obj = open_it()
    with _OPENED_LOCK:
        if len(_OPENED) >= _OPENED_MAX:
            _OPENED.pop(next(iter(_OPENED)))  # oldest first (dicts keep insertion order)
        return _OPENED.setdefault(key, obj)


def read_inputs(spec: ShardSpec, ctx: DownscaleContext):
    """(fused_sm, source_flag, predictors dict, times) of one shard, as numpy arrays.

    An all-sea shard returns no predictors (``{}``): it is never predicted, so they are not read.
    """
    from sm1km.core.features import DAILY_PREDICTORS, PREDICTOR_NAMES

    fused = _opened("dataset", ctx.fused_url, ctx)
    ft = slice(ctx.fused_t0 + spec.t0, ctx.fused_t0 + spec.t1)
    cs = {"time": ft, "lat": slice(spec.r0, spec.r1), "lon": slice(spec.c0, spec.c1)}
    fused_sm = np.asarray(fused["sm"].isel(cs).values, dtype=np.float32)
    flag = fused["source_flag"].isel(cs).values
    flag = np.where(np.isnan(flag), 0, flag).astype(np.uint8) if flag.dtype.kind == "f" else flag.astype(np.uint8)
    times = pd.date_range(ctx.start, periods=spec.t1, freq="D")[spec.t0:]
    if ((flag == 0) | np.isnan(fused_sm)).all():
        return fused_sm, flag, {}, times.values  # all sea: nothing to predict, no predictor to read
    pred_ds = _opened("dataset", ctx.predictors_url, ctx)
    y, x = spec.fine
    pt = slice(ctx.predictors_t0 + spec.t0, ctx.predictors_t0 + spec.t1)
    predictors = {}
    for name in PREDICTOR_NAMES:
        if name not in pred_ds:
            raise InputError(ctx.predictors_url, f"predictor '{name}' is missing.",
                             "re-run `sm1km ingest` (inputs/predictors.zarr must hold every predictor).")
        da = pred_ds[name]
        sel = {"lat": y, "lon": x}
        if "time" in da.dims:
            sel["time"] = pt
        elif name in DAILY_PREDICTORS:
            log.debug("predictor %s is static in the store", name)
        predictors[name] = np.asarray(da.isel(sel).values, dtype=np.float32)
    return fused_sm, flag, predictors, times.values


def predict_shard(fused_sm, flag, predictors, times, factor: int, model, with_uncertainty: bool,
                  batch_rows: int = FEATURE_BATCH_ROWS) -> tuple[np.ndarray, np.ndarray | None]:
    """Pure core of a shard: float32 (t, y, x) soil moisture (and uncertainty), NaN over sea
    (fused ``source_flag`` 0 or NaN) and over 1 km water pixels (``land_cover`` in WATER_LAND_COVER).

    Features are built day-batch by day-batch into one preallocated buffer (≤ ``batch_rows`` rows),
    so memory is bounded by the shard, never by the region or period.
    """
    from sm1km.core.features import N_FEATURES, build_features, day_of_year

    nt, yc, xc = fused_sm.shape
    ny, nx = yc * factor, xc * factor
    sea = (flag == 0) | np.isnan(fused_sm)
    sm = np.full((nt, ny, nx), np.nan, dtype=np.float32)
    unc = np.full((nt, ny, nx), np.nan, dtype=np.float32) if with_uncertainty else None
    if sea.all():
        return sm, unc
    # The model runs on kept rows only: sea and 1 km water stay NaN without being predicted
    # (prediction is ~95 % of a task's CPU; coastal shards are part sea). Same values as
    # predicting every row and masking afterwards: each row's prediction is independent.
    drop = np.repeat(np.repeat(sea, factor, axis=1), factor, axis=2)
    lc = predictors.get("land_cover")
    if lc is not None:
        drop |= np.isin(lc, WATER_LAND_COVER)  # (y, x) or (t, y, x): broadcasts
    keep = ~drop.reshape(-1)
    del drop
    per_day = ny * nx
    days = max(1, min(nt, batch_rows // per_day))
    # column-major feature buffer (each feature one contiguous fill, see build_features); every
    # batch gets an F-contiguous (rows, N_FEATURES) view of the first rows·N_FEATURES floats
    flat = np.empty(days * per_day * N_FEATURES, dtype=np.float32)
    doy = day_of_year(times)
    sm_rows = sm.reshape(-1)  # views: writes land in sm / unc
    unc_rows = unc.reshape(-1) if unc is not None else None
    for d0 in range(0, nt, days):
        d1 = min(d0 + days, nt)
        rows = slice(d0 * per_day, d1 * per_day)
        k = keep[rows]
        n_keep = int(np.count_nonzero(k))
        if n_keep == 0:
            continue
        sub = {name: (v[d0:d1] if v.ndim == 3 else v) for name, v in predictors.items()}
        n_rows = (d1 - d0) * per_day
        X = build_features(fused_sm[d0:d1], flag[d0:d1], sub, doy[d0:d1], factor,
                           out=flat[: n_rows * N_FEATURES].reshape(N_FEATURES, n_rows).T)
        if n_keep < k.size:
            X = X[k]  # compact copy of the kept rows (bounded by the batch)
            sm_rows[rows][k] = model.predict(X)
            if unc_rows is not None:
                unc_rows[rows][k] = model.predict_uncertainty(X)
        else:
            sm_rows[rows] = model.predict(X)
            if unc_rows is not None:
                unc_rows[rows] = model.predict_uncertainty(X)
    return sm, unc


def downscale_shard(spec: ShardSpec, ctx: DownscaleContext) -> dict[str, Any]:
    """The task: read → features → predict → clip → pack int16 → write the shard → ledger mark."""
    fused_sm, flag, predictors, times = read_inputs(spec, ctx)
    model = _worker_model(ctx.model_url, ctx.model_sha256, ctx.storage_options, ctx.n_threads, ctx.device)
    sm, unc = predict_shard(fused_sm, flag, predictors, times, spec.factor, model, ctx.with_uncertainty)
    del predictors
    arrays = {"sm": encode_int16(sm)}
    if unc is not None:
        arrays["sm_uncertainty"] = encode_int16(unc)
    n_land = int(np.count_nonzero(arrays["sm"] != FILL))
    master.write_packed(ctx.master_url, spec.region, arrays, ctx.storage_options,
                        group=_opened("group", ctx.master_url, ctx))
    store.Ledger(ctx.root, master.MASTER_STORE, ctx.storage_options).mark(
        spec.key, {"land_pixel_days": n_land, "model_sha256": ctx.model_sha256})
    return {"key": spec.key, "land_pixel_days": n_land}


# --------------------------------------------------------------------------------------------
# checks done once by the driver
# --------------------------------------------------------------------------------------------
def _time_offset(url: str, ds, dates: pd.DatetimeIndex) -> int:
    t = pd.DatetimeIndex(ds["time"].values)
    i = int(t.searchsorted(dates[0]))
    if i + len(dates) > len(t) or not t[i:i + len(dates)].equals(dates):
        raise InputError(url, f"the store's time axis ({t[0].date() if len(t) else '-'} .. "
                              f"{t[-1].date() if len(t) else '-'}, {len(t)} days) does not cover the run's "
                              f"period {dates[0].date()} .. {dates[-1].date()} day by day.",
                         "re-run the stage that writes it with this config (or fix period in the config).")
    return i


def _check_space(url: str, ds, lat0: float, n_lat: int, n_lon: int) -> None:
    if ds.sizes.get("lat") != n_lat or ds.sizes.get("lon") != n_lon or \
            not np.isclose(float(ds["lat"].values[0]), lat0, atol=1e-9):
        raise InputError(url, f"the store's grid ({ds.sizes.get('lat')}×{ds.sizes.get('lon')}, first lat "
                              f"{float(ds['lat'].values[0]) if 'lat' in ds else '-'}) is not the run's region "
                              f"({n_lat}×{n_lon}, first lat {lat0}).",
                         "re-run the stage that writes it with this config (region and grid.factor must match).")


def make_context(cfg, model) -> DownscaleContext:
    """Open the inputs once, check that they fit the run, and build the task context."""
    so = cfg.store.storage_options()
    region, factor = cfg.coarse_region, cfg.grid.factor
    dates = pd.DatetimeIndex(cfg.dates())
    fused_url, pred_url = cfg.store.url("fused.zarr"), cfg.store.url("inputs", "predictors.zarr")
    fused = store.open_dataset(fused_url, so)
    for v in ("sm", "source_flag"):
        if v not in fused:
            raise InputError(fused_url, f"variable '{v}' is missing.", "re-run `sm1km fuse`.")
    _check_space(fused_url, fused, float(coarse_lat(region.row0)), region.n_rows, region.n_cols)
    preds = store.open_dataset(pred_url, so)
    g = FineGrid(factor)
    _check_space(pred_url, preds, float(g.lat(region.row0 * factor)), region.n_rows * factor, region.n_cols * factor)
    pred_t0 = _time_offset(pred_url, preds, dates) if "time" in preds.dims else 0
    return DownscaleContext(
        root=cfg.store.root, master_url=cfg.store.url(master.MASTER_STORE), fused_url=fused_url,
        predictors_url=pred_url, storage_options=so, model_url=cfg.model_path, model_sha256=model.sha256,
        n_threads=cfg.model.n_threads, device=cfg.model.predict_device,
        with_uncertainty=model.has_uncertainty, fused_t0=_time_offset(fused_url, fused, dates),
        predictors_t0=pred_t0, start=str(dates[0].date()), run_token=uuid.uuid4().hex)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def downscale(cfg, client=None, *, max_in_flight: int | None = None, **options) -> StageResult:
    """Write ``master.zarr`` (template, shards, coverage + consolidated metadata); resumable.

    Returns ``{"master": url, "ledger": url}`` with ``.stats`` = shards total/written/skipped and
    land pixel-days written.
    """
    from sm1km.storage.model import load_model

    so = cfg.store.storage_options()
    url = cfg.store.url(master.MASTER_STORE)
    model = load_model(cfg.model_path, so, n_threads=cfg.model.n_threads, device=cfg.model.predict_device)
    if not model.has_uncertainty:
        log.warning("model %s has no uncertainty model: sm_uncertainty stays empty (fill)", cfg.model_path)
    ctx = make_context(cfg, model)
    card = {k: model.card.get(k) for k in ("algorithm", "created", "sm1km_version") if k in model.card}
    tpl, enc = master.master_template(cfg, model_sha256=model.sha256, model_card=card)
    created = store.create_template(url, tpl, enc, so)
    if not created:
        existing = store.open_group(url, so).attrs.get("model_sha256")
        if existing and existing != model.sha256:
            raise StoreError(url, f"the existing master was written with another model (sha256 {existing[:12]}…; "
                                  f"now {model.sha256[:12]}…).",
                             "write into a new store.root, or remove master.zarr and its ledger "
                             "(_ledger/master.zarr) to recompute everything.")
    ledger = store.Ledger(cfg.store.root, master.MASTER_STORE, so)
    done = ledger.keys()
    total = n_shards(cfg)
    todo = (s for s in shard_specs(cfg) if s.key not in done)
    skipped = sum(1 for s in shard_specs(cfg) if s.key in done)
    log.info("downscale: %d shards, %d already done (skipped), %d to write -> %s", total, skipped,
             total - skipped, url)
    written, land = 0, 0
    with stage_client(cfg, client) as c:
        for res in run_bounded(c, downscale_shard, todo, ctx, window=max_in_flight, name="downscale_shard"):
            written += 1
            land += res["land_pixel_days"]
            if written % 50 == 0 or written == total - skipped:
                log.info("downscale: %d/%d shards written", written, total - skipped)
    store.finalize(url, so, store.coverage_attrs(cfg.dates()))
    stats = {"shards_total": total, "shards_written": written, "shards_skipped": skipped,
             "land_pixel_days_written": land}
    log.info("downscale done: %s", stats)
    return StageResult({"master": url, "ledger": ledger.url}, stats)


# --------------------------------------------------------------------------------------------
# accuracy against the synthetic truth
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TruthContext:
    master_url: str
    truth_url: str
    fused_url: str
    storage_options: dict
    truth_t0: int
    fused_t0: int


def _cell_anomaly(a: np.ndarray, factor: int) -> np.ndarray:
    """``a`` minus the mean of its 25 km cell (per day, NaN ignored)."""
    nt, ny, nx = a.shape
    r = a.reshape(nt, ny // factor, factor, nx // factor, factor)
    cnt = np.isfinite(r).sum(axis=(2, 4), keepdims=True)
    s = np.nansum(r, axis=(2, 4), keepdims=True, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / cnt
    return (r - mean).reshape(nt, ny, nx)


def truth_shard_moments(product, truth, baseline, factor: int) -> dict[str, tuple]:
    """Pure: mergeable moments of one block (t, y, x) for product/baseline vs truth and the
    spatial anomalies (value minus its 25 km cell mean) of product vs truth. Pixels where any of
    the three is missing are left out of all statistics."""
    from sm1km.core.metrics import Moments

    ok = np.isfinite(product) & np.isfinite(truth) & np.isfinite(baseline)
    p = np.where(ok, product, np.nan)
    t = np.where(ok, truth, np.nan)
    b = np.where(ok, baseline, np.nan)
    pa, ta = _cell_anomaly(p, factor), _cell_anomaly(t, factor)
    zero = np.where(ok, 0.0, np.nan)
    return {"downscaled": Moments.from_arrays(p, t).as_tuple(),
            "baseline_25km": Moments.from_arrays(b, t).as_tuple(),
            "anomaly_downscaled": Moments.from_arrays(pa, ta).as_tuple(),
            "anomaly_baseline_25km": Moments.from_arrays(zero, ta).as_tuple()}


def _truth_task(spec: ShardSpec, ctx: TruthContext) -> dict[str, tuple]:
    from sm1km.core.encoding import decode_int16

    so = ctx.storage_options
    y, x = spec.fine
    q = store.open_group(ctx.master_url, so)["sm"][spec.t0:spec.t1, y, x]
    product = decode_int16(q, dtype=np.float64)  # as xarray decodes it (float64 scale_factor)
    truth = np.asarray(store.open_dataset(ctx.truth_url, so)["sm"].isel(
        time=slice(ctx.truth_t0 + spec.t0, ctx.truth_t0 + spec.t1), lat=y, lon=x).values, dtype=np.float32)
    fused = np.asarray(store.open_dataset(ctx.fused_url, so)["sm"].isel(
        time=slice(ctx.fused_t0 + spec.t0, ctx.fused_t0 + spec.t1), lat=slice(spec.r0, spec.r1),
        lon=slice(spec.c0, spec.c1)).values, dtype=np.float32)
    baseline = np.repeat(np.repeat(fused, spec.factor, axis=1), spec.factor, axis=2)
    return truth_shard_moments(product, truth, baseline, spec.factor)


def truth_url(cfg) -> str | None:
    """The synthetic truth store of a run: ``inputs.truth``, else ``<root>/truth.zarr`` if present."""
    if cfg.inputs.truth:
        return cfg.inputs.truth
    url = cfg.store.url("truth.zarr")
    return url if store.exists(url, cfg.store.storage_options()) else None


def truth_metrics(cfg, client=None, *, max_in_flight: int | None = None) -> dict[str, Any]:
    """ubRMSE, R, bias (and RMSE, n) of the 1 km master and of the 25 km baseline (fused value
    repeated over its 1 km pixels) against the 1 km truth, pooled over all land pixel-days; plus
    ``spatial_anomaly_r`` (and ``_rmse``): agreement of sub-cell anomalies (value minus its 25 km
    cell mean). Computed per master shard, merged from sufficient statistics."""
    from sm1km.core.metrics import Moments

    so = cfg.store.storage_options()
    turl = truth_url(cfg)
    if turl is None:
        raise InputError("inputs.truth", "no truth store for this run (synthetic world only).",
                         "set inputs.truth to the synthetic world's truth.zarr.")
    dates = pd.DatetimeIndex(cfg.dates())
    region, factor = cfg.coarse_region, cfg.grid.factor
    truth = store.open_dataset(turl, so)
    _check_space(turl, truth, float(FineGrid(factor).lat(region.row0 * factor)), region.n_rows * factor,
                 region.n_cols * factor)
    furl = cfg.store.url("fused.zarr")
    ctx = TruthContext(master_url=cfg.store.url(master.MASTER_STORE), truth_url=turl, fused_url=furl,
                       storage_options=so, truth_t0=_time_offset(turl, truth, dates),
                       fused_t0=_time_offset(furl, store.open_dataset(furl, so), dates))
    acc = {k: Moments() for k in ("downscaled", "baseline_25km", "anomaly_downscaled", "anomaly_baseline_25km")}
    with stage_client(cfg, client) as c:
        for res in run_bounded(c, _truth_task, shard_specs(cfg), ctx, window=max_in_flight, name="truth_metrics"):
            for k, tup in res.items():
                acc[k] = acc[k].merge(Moments(*tup))
    out: dict[str, Any] = {}
    for name in ("downscaled", "baseline_25km"):
        d = acc[name].to_dict()
        a = acc[f"anomaly_{name}"].to_dict()
        d["spatial_anomaly_r"] = a["r"]
        d["spatial_anomaly_rmse"] = a["rmse"]
        out[name] = d
    out["truth"] = turl
    out["definition"] = ("pooled over land pixel-days of the run; baseline_25km = fused 25 km value repeated over "
                         "its 1 km pixels; spatial anomaly = value minus the mean of its 25 km cell on that day")
    return out


def write_truth_metrics(cfg, client=None) -> str:
    """Compute :func:`truth_metrics` and write them as the ``truth`` section of metrics.json."""
    from sm1km.storage.metrics_json import update_metrics_json

    m = truth_metrics(cfg, client)
    d, b = m["downscaled"], m["baseline_25km"]
    log.info("vs 1 km truth: ubRMSE %.4f (1 km) vs %.4f (25 km baseline); R %.3f vs %.3f; spatial anomaly R %.3f",
             d["ubrmse"], b["ubrmse"], d["r"], b["r"], d["spatial_anomaly_r"])
    return update_metrics_json(cfg, "truth", m)
