"""``sm1km verify URL...``: check a Zarr store against the project's conventions (like ``xcube verify``).

Checks: consolidated metadata present; CF/ACDD global attributes and coverage attributes that match
the time axis; coordinates (lat descending, lon ascending, regular); every data variable has units
(or flag attributes); packed int16 variables carry ``scale_factor``/``_FillValue`` as array attributes
(for non-xarray readers) and a zarr ``fill_value`` equal to ``_FillValue`` (unwritten chunks read as
missing); ``grid_mapping`` targets exist; the stage's ledger lists every region as finished (a store whose run
did not finish is reported as incomplete).

:func:`verify_run` (``sm1km verify --config run.yaml``) checks a whole run: every product store
(``fused``, ``master``, ``monthly``: the checks above, plus **no ledger marker without its shard** —
a marker whose ``land_pixel_days`` > 0 whose ``sm`` shard object is missing —, **every shard object
intact** — its index read from the object's tail passes its crc32c and points inside the object, so a
truncated or torn shard is named instead of reading back as an error or as fill — and **the deps
records consistent**: every marker's ``"deps"`` equals its time block's record in ``blocks.json``
and every record has a marker), the exports under ``<root>/exports/*/`` (every file of
``_manifest.json`` exists, is not empty, embeds the manifest's ``sm1km_deps``; each GeoTIFF is a
valid COG by rio-cogeo's ``cog_validate``; each HDF5 opens and holds its variables with the
manifest's day count; each netCDF file opens with the netCDF-C library as netCDF-4, holds its
variables, and its time axis, decoded, spans the manifest's days) and the STAC catalog (every asset of every item exists). The shard check reads
one index (16 bytes per inner chunk) per shard object: one ranged request each on S3.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sm1km.storage import store

log = logging.getLogger(__name__)


@dataclass
class Report:
    url: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "problems": self.problems, "notes": self.notes}


def verify_store(url: str, storage_options: Mapping[str, Any] | None = None, check_chunks: bool = True) -> Report:
    """Check one store; returns a Report (problems = convention violations or missing data)."""
    rep = Report(url)
    root_meta = store.read_json(store.join(url, "zarr.json"), storage_options)
    if root_meta is None:
        rep.problems.append("no zarr.json: not a Zarr v3 store")
        return rep
    if not root_meta.get("consolidated_metadata"):
        rep.problems.append("no consolidated metadata (the run did not finish, or readers over HTTP must list)")
    attrs = root_meta.get("attributes", {})
    for key in ("Conventions", "title", "date_created", "sm1km_version"):
        if key not in attrs:
            rep.problems.append(f"global attribute '{key}' missing")
    ds = store.open_dataset(url, storage_options, decode=False)
    group = store.open_group(url, storage_options)

    if "time" in ds.coords:
        import pandas as pd

        t = pd.to_datetime(store.open_dataset(url, storage_options).time.values)
        step = (t[1] - t[0]) if len(t) > 1 else pd.Timedelta("1D")
        if len(t) == 1 and "time_bnds" in ds.variables:  # one month: its bounds give the step
            b = pd.to_datetime(store.open_dataset(url, storage_options).time_bnds.values.ravel())
            step = b.max() - b.min()
        for key, want in (("time_coverage_start", t.min()), ("time_coverage_end", t.max())):
            got = attrs.get(key)
            if got is None:
                rep.problems.append(f"coverage attribute '{key}' missing")
                continue
            got_t, want_t = pd.Timestamp(got), pd.Timestamp(want.date())
            # daily stores: exact; monthly stores: the end lies inside the last month
            late = pd.Timedelta(0) if key.endswith("start") or step <= pd.Timedelta("1D") else pd.Timedelta("31D")
            if not (want_t <= got_t <= want_t + late):
                rep.problems.append(f"{key} = {got} but the time axis says {want.date()}")
        if "last_updated" not in attrs:
            rep.problems.append("coverage attribute 'last_updated' missing")
    for name, descending in (("lat", True), ("lon", False)):
        if name in ds.coords and ds[name].size > 1:
            d = np.diff(ds[name].values.astype("float64"))
            if descending and not (d < 0).all():
                rep.problems.append("lat is not strictly descending (north to south)")
            if not descending and not (d > 0).all():
                rep.problems.append("lon is not strictly ascending")
            if not np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
                rep.problems.append(f"{name} is not regularly spaced")

    for v in ds.data_vars:
        arr = store.array(group, str(v))
        a: dict[str, Any] = dict(arr.attrs)
        if ds[v].ndim == 0:
            continue
        if "units" not in a and "flag_values" not in a and "flag_meanings" not in a:
            rep.problems.append(f"{v}: no 'units' (or flag_values/flag_meanings) attribute")
        if arr.dtype == np.int16 and a.get("units") not in (None, "1", "count", "days"):
            for key in ("scale_factor", "_FillValue"):
                if key not in a:
                    rep.problems.append(f"{v}: packed int16 without '{key}' array attribute")
            if "_FillValue" in a and arr.fill_value is not None and int(arr.fill_value) != int(a["_FillValue"]):
                rep.problems.append(f"{v}: zarr fill_value {arr.fill_value} != _FillValue {a['_FillValue']} "
                                    "(unwritten chunks would read as valid data)")
        gm = a.get("grid_mapping")
        if gm and gm not in ds.variables:
            rep.problems.append(f"{v}: grid_mapping '{gm}' does not exist")
    if check_chunks:
        _check_ledger(rep, url, storage_options, ds, group)
    return rep


def _check_ledger(rep: Report, url: str, storage_options, ds, group) -> None:
    """Completeness from the stage's ledger (chunks that are all fill are legitimately not stored)."""
    root, name = url.rstrip("/").rsplit("/", 1)
    if root.endswith("/inputs"):
        root, name = root[: -len("/inputs")], f"inputs/{name}"
    ledger = store.Ledger(root, name, storage_options)
    keys = ledger.keys()
    if not keys:
        rep.notes.append("no region ledger for this store: completeness not checked")
        return
    import re

    region_key = re.compile(r"^([A-Za-z]\w*?)-(\d+)-(\d+)$")
    spans: dict[str, set[tuple[int, int]]] = {}
    parsed = [k for k in keys if all(region_key.match(p) for p in k.split("_"))]
    if not parsed:
        rep.notes.append("the ledger holds no region markers (e.g. ingest's index): completeness not checked")
        return
    for k in parsed:
        for part in k.split("_"):
            m = region_key.match(part)
            assert m is not None  # every part of a parsed key matched above
            dim, a, b = m.groups()
            spans.setdefault(dim, set()).add((int(a), int(b)))
    covered = {}
    for dim, ivs in spans.items():
        covered[dim] = sum(b - a for a, b in ivs)
    expected_regions = int(np.prod([len(ivs) for ivs in spans.values()]))
    missing_dims = [d for d, n in covered.items() if d in ds.sizes and n < ds.sizes[d]]
    if len(parsed) < expected_regions or missing_dims:
        rep.problems.append(f"ledger: {len(parsed)} of {max(expected_regions, len(parsed))} regions finished"
                            f"{' (dims not fully covered: ' + ', '.join(missing_dims) + ')' if missing_dims else ''}"
                            " — re-run the stage to finish")
    else:
        rep.notes.append(f"ledger: all {len(parsed)} regions finished")


# ---------------------------------------------------------------------------------------------- a run
#: product store -> the verb that (re)writes it
PRODUCT_STORES = {"fused.zarr": "fuse", "master.zarr": "downscale", "monthly.zarr": "aggregate"}
_SPAN = re.compile(r"^([A-Za-z]\w*?)-(\d+)-(\d+)$")
_TIME_SPAN = re.compile(r"(?:^|_)(time-\d+-\d+)(?:_|$)")


@dataclass
class Check:
    """One check over one object (a store, an export folder, the catalog): ``items`` objects examined,
    ``problems`` as ``(object, what is wrong, how to fix it)``."""

    name: str
    target: str
    items: int = 0
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, obj: str, problem: str, fix: str) -> None:
        self.problems.append((obj, problem, fix))

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"check": self.name, "object": self.target, "ok": self.ok, "items": self.items,
                             "failed": [{"object": o, "problem": p} for o, p, _ in self.problems]}
        if self.notes:
            d["notes"] = self.notes
        return d


@dataclass
class RunReport:
    """What :func:`verify_run` checked: one :class:`Check` per check and object."""

    root: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, target: str) -> Check:
        c = Check(name, target)
        self.checks.append(c)
        return c

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "checks_run": len(self.checks),
                "passed": sum(c.ok for c in self.checks), "failed": sum(not c.ok for c in self.checks),
                "checks": [c.as_dict() for c in self.checks]}

    def paragraphs(self) -> list[str]:
        """One paragraph per problem: the object, what is wrong, what to do."""
        return [f"{c.name}: {obj}: {problem}. {fix}" for c in self.checks for obj, problem, fix in c.problems]


def verify_run(cfg, *, check_chunks: bool = True) -> RunReport:
    """Check every product store, the exports and the catalog of the run of ``cfg`` (see the module docstring)."""
    so = cfg.store.storage_options()
    rep = RunReport(cfg.store.root)
    cfg_hint = "`sm1km {verb} --config run.yaml`"
    for name, verb in PRODUCT_STORES.items():
        url = cfg.store.url(name)
        conv = rep.add("store.conventions", url)
        conv.items = 1
        if store.read_json(store.join(url, "zarr.json"), so) is None:
            conv.fail(url, "the store does not exist", f"run {cfg_hint.format(verb=verb)}")
            continue
        r = verify_store(url, so, check_chunks=check_chunks)
        for p in r.problems:
            conv.fail(url, p, f"re-run {cfg_hint.format(verb=verb)} to finish or rewrite it")
        conv.notes.extend(r.notes)
        _check_deps(rep.add("store.deps", url), cfg.store.root, name, so, verb)
        if check_chunks:
            _check_shards(rep.add("store.shards", url), cfg.store.root, name, so, verb)
    _check_exports(rep, cfg.store.url("exports"), so)
    _check_catalog(rep.add("catalog.assets", cfg.store.url("catalog")), cfg.store.url("catalog"), so)
    return rep


def _markers(root: str, name: str, so) -> dict[str, dict[str, Any]]:
    ledger = store.Ledger(root, name, so)
    out = {}
    for k in sorted(ledger.keys()):
        if all(_SPAN.match(p) for p in k.split("_")):
            out[k] = ledger.info(k) or {}
    return out


def _check_deps(chk: Check, root: str, name: str, so, verb: str) -> None:
    """Every marker's deps equal its block's record in blocks.json; every record has a marker."""
    from sm1km.storage.deps import BlockDigests

    blocks = BlockDigests(root, name, so).read()
    markers = _markers(root, name, so)
    chk.items = len(markers)
    if not blocks:
        chk.notes.append("no blocks.json: dependency records not checked")
        return
    fix = f"re-run `sm1km {verb} --config run.yaml` (it redoes the units whose deps differ from their block's)"
    used: set[str] = set()
    ledger_url = store.join(root, "_ledger", name)
    for key, info in markers.items():
        deps = info.get("deps")
        if deps is None:
            continue
        if isinstance(deps, Mapping):
            pairs = [(str(b), str(d)) for b, d in deps.items()]
        else:
            m = _TIME_SPAN.search(key)
            if not m:
                continue
            pairs = [(m[1], str(deps))]
        for block, d in pairs:
            used.add(block)
            if block not in blocks:
                chk.fail(f"{ledger_url}/{key}.json", f"marker deps for block {block} but blocks.json has no record "
                         "of that block (the block was not finished)", fix)
            elif blocks[block] != d:
                chk.fail(f"{ledger_url}/{key}.json", f"marker deps {d[:12]}… differ from block {block}'s record "
                         f"{blocks[block][:12]}… in blocks.json (a stale unit)", fix)
    for block in sorted(set(blocks) - used):
        chk.fail(f"{ledger_url}/blocks.json", f"block {block} is recorded but no unit marker carries its deps", fix)


def _shard_grid(meta: Mapping[str, Any]) -> tuple[list[int], int | None, list[dict[str, Any]]]:
    """(outer chunk shape, inner chunks per shard or None when not sharded, index codecs) of an array."""
    outer = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
    for c in meta.get("codecs", []):
        if c.get("name") == "sharding_indexed":
            conf = c["configuration"]
            inner = conf["chunk_shape"]
            n = int(np.prod([-(-o // i) for o, i in zip(outer, inner, strict=True)]))
            if conf.get("index_location", "end") != "end":
                return outer, None, []
            return outer, n, list(conf.get("index_codecs", []))
    return outer, None, []


def _shard_intact(blob_tail: bytes, size: int, n_inner: int, crc: bool) -> str | None:
    """None if the shard index (the object's last bytes) is intact and points inside the object."""
    want = 16 * n_inner + (4 if crc else 0)
    if size < want or len(blob_tail) < want:
        return f"{size} bytes, shorter than its index ({want} bytes): truncated"
    idx = blob_tail[-want:]
    if crc:
        import google_crc32c

        body, stored = idx[:-4], idx[-4:]
        if google_crc32c.value(body).to_bytes(4, "little") != stored:
            return "its index fails its crc32c checksum: truncated or torn"
        idx = body
    entries = np.frombuffer(idx, dtype="<u8").reshape(-1, 2)
    used = entries[~((entries[:, 0] == np.iinfo("u8").max) & (entries[:, 1] == np.iinfo("u8").max))]
    if used.size and int((used[:, 0] + used[:, 1]).max()) > size - want:
        return "its index points past the end of the data: truncated"
    return None


def _check_shards(chk: Check, root: str, name: str, so, verb: str) -> None:
    """Every shard object of every array intact; no marker with land pixels without its ``sm`` shard."""
    url = store.join(root, name)
    fs, path = store.filesystem(url, so)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    markers = _markers(root, name, so)
    root_meta = store.read_json(store.join(url, "zarr.json"), so) or {}
    arrays = {k: v for k, v in (root_meta.get("consolidated_metadata") or {}).get("metadata", {}).items()
              if v.get("node_type") == "array" and "/" not in k}
    ledger_url = store.join(root, "_ledger", name)
    for var, meta in sorted(arrays.items()):
        base = posixpath.join(path.rstrip("/"), var, "c")
        try:
            found = fs.find(base, detail=True)
        except FileNotFoundError:
            found = {}
        outer, n_inner, index_codecs = _shard_grid(meta)
        present = {p[len(base) + 1:]: int(info.get("size") or 0) for p, info in found.items()}
        if var == "sm":
            dims = list(meta.get("dimension_names") or [])
            for key, info in markers.items():
                if int(info.get("land_pixel_days", 0) or 0) <= 0:
                    continue
                spans = {m[1]: (int(m[2]), int(m[3])) for m in (_SPAN.match(p) for p in key.split("_")) if m}
                if not dims or any(d not in spans for d in dims):
                    continue
                ranges = [range(spans[d][0] // o, -(-spans[d][1] // o)) for d, o in zip(dims, outer, strict=True)]
                keys = ["/".join(map(str, ix)) for ix in np.ndindex(*[len(r) for r in ranges])]
                keys = ["/".join(str(r[int(i)]) for r, i in zip(ranges, k.split("/"), strict=True)) for k in keys]
                chk.items += 1
                if not any(k in present for k in keys):
                    chk.fail(f"{ledger_url}/{key}.json", f"marked done with {info['land_pixel_days']} land pixel-days "
                             f"but its shard {url}/sm/c/{keys[0]} is missing",
                             f"re-run `sm1km {verb} --config run.yaml` (a marked unit whose shard is missing is "
                             "recomputed), or delete the marker first")
        if n_inner is None:
            continue
        crc = any(c.get("name") == "crc32c" for c in index_codecs)
        want = 16 * n_inner + (4 if crc else 0)
        for rel, size in sorted(present.items()):
            chk.items += 1
            tail = fs.cat_file(posixpath.join(base, rel), start=max(0, size - want), end=size) if size else b""
            bad = _shard_intact(tail, size, n_inner, crc)
            if bad:
                chk.fail(f"{url}/{var}/c/{rel}", f"shard object is damaged: {bad}",
                         f"delete it and the ledger markers of its region under {ledger_url}/, then re-run "
                         f"`sm1km {verb} --config run.yaml`")


def _local_copy(url: str, so, tmpdir: str) -> str:
    if not store.is_remote(url):
        return url
    fs, path = store.filesystem(url, so)
    local = posixpath.join(tmpdir, posixpath.basename(path))
    fs.get(path, local)
    return local


def _check_exports(rep: RunReport, exports: str, so) -> None:
    """Every export folder with a manifest: its files exist, are not empty, embed the manifest's digest,
    and open as what they are (a valid COG; an HDF5 file with its variables)."""
    import tempfile

    from sm1km.stages.export.manifest import MANIFEST, embedded_deps, read_manifest

    fs, path = store.filesystem(exports, so)
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()
    try:
        folders = sorted(p for p in fs.ls(path, detail=False) if fs.exists(posixpath.join(p, MANIFEST)))
    except FileNotFoundError:
        folders = []
    if not folders:
        chk = rep.add("exports.manifest", exports)
        chk.fail(exports, "no export folder with a _manifest.json", "run `sm1km export --config run.yaml`")
        return
    fix = "re-run `sm1km export --config run.yaml` with the same options (missing or stale files are rewritten)"
    for folder_path in folders:
        out = store.join(exports, posixpath.basename(folder_path))
        files = read_manifest(out, so)
        exist, digest, valid = rep.add("exports.files", out), rep.add("exports.deps", out), rep.add("exports.valid", out)
        if not files:
            exist.fail(store.join(out, MANIFEST), "the manifest is unreadable or lists no file", fix)
            continue
        sizes = {posixpath.basename(d["name"]): int(d.get("size") or 0) for d in fs.ls(folder_path, detail=True)}
        for fname, entry in sorted(files.items()):
            if entry.get("empty"):
                continue
            furl = store.join(out, fname)
            exist.items += 1
            if fname not in sizes:
                exist.fail(furl, "listed in _manifest.json but missing", fix)
                continue
            if sizes[fname] <= 0:
                exist.fail(furl, "empty (0 bytes)", fix)
                continue
            digest.items += 1
            got = embedded_deps(furl, so)
            if got != entry.get("deps"):
                digest.fail(furl, f"embedded sm1km_deps {str(got)[:12]}… != the manifest's {str(entry.get('deps'))[:12]}…",
                            fix)
            valid.items += 1
            with tempfile.TemporaryDirectory(prefix="sm1km-verify-") as tmp:
                bad = _file_problem(_local_copy(furl, so, tmp), entry)
            if bad:
                valid.fail(furl, bad, fix)
        strays = sorted(n for n in sizes if n != MANIFEST and n not in files)
        if strays:
            exist.notes.append(f"{len(strays)} file(s) not in the manifest: {', '.join(strays[:5])}")


def _file_problem(local: str, entry: Mapping[str, Any]) -> str | None:
    """Why an exported file is not what it claims to be (None: it is)."""
    if local.endswith((".tif", ".tiff")):
        from rio_cogeo.cogeo import cog_validate

        try:
            is_cog, errors, _ = cog_validate(local, quiet=True)
        except Exception as exc:
            return f"does not open as a GeoTIFF ({type(exc).__name__}: {exc})"
        return None if is_cog else "not a valid COG: " + "; ".join(errors)
    if local.endswith(".nc"):
        return _netcdf_problem(local, entry)
    if local.endswith(".h5"):
        import h5py

        want = ["SM"] if posixpath.basename(local).startswith("SM.") else ["time", "lat", "lon", "crs", "sm"]
        try:
            with h5py.File(local, "r") as f:
                missing = [v for v in want if v not in f]
                if missing:
                    return f"HDF5 file without variable(s) {', '.join(missing)}"
                n_days = entry.get("n_days")
                data = f[want[-1]]
                if n_days is not None and data.shape[0] != int(n_days):
                    return f"{want[-1]} holds {data.shape[0]} days, the manifest says {n_days}"
        except OSError as exc:
            return f"does not open as HDF5 ({exc})"
    return None


def _netcdf_problem(local: str, entry: Mapping[str, Any]) -> str | None:
    """Why an exported netCDF file is not what the manifest says (None: it is)."""
    import netCDF4

    from sm1km.stages.export.netcdf import NC_LOCK

    want = ["time", "time_bnds", "lat", "lon", "crs", "sm"]
    try:
        with NC_LOCK, netCDF4.Dataset(local, "r") as nc:
            if nc.data_model != "NETCDF4":
                return f"a {nc.data_model} file, not netCDF-4"
            missing = [v for v in want if v not in nc.variables]
            if missing:
                return f"netCDF file without variable(s) {', '.join(missing)}"
            n_days = entry.get("n_days")
            if n_days is not None and nc["sm"].shape[0] != int(n_days):
                return f"sm holds {nc['sm'].shape[0]} days, the manifest says {n_days}"
            t = nc["time"]
            days = np.atleast_1d(np.asarray(netCDF4.num2date(t[:], t.units, getattr(t, "calendar", "standard")),
                                            dtype=object))
            first, last = (str(d)[:10] for d in (days[0], days[-1])) if days.size else ("", "")
    except OSError as exc:
        return f"does not open as netCDF ({exc})"
    span = (entry.get("time_coverage_start"), entry.get("time_coverage_end"))
    if span[0] and (first, last) != span:
        return f"its time axis spans {first} to {last}, the manifest says {span[0]} to {span[1]}"
    return None


def _asset_url(item_url: str, href: str) -> str:
    if "://" in href or href.startswith("/"):
        return href
    base, _ = item_url.rsplit("/", 1)
    scheme, sep, rest = base.partition("://")
    if not sep:
        return posixpath.normpath(posixpath.join(base, href))
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, href))}"


def _check_catalog(chk: Check, catalog: str, so) -> None:
    """Every asset of every item (and of the collection) linked from collection.json exists."""
    col_url = store.join(catalog, "collection.json")
    col = store.read_json(col_url, so)
    if col is None:
        chk.fail(col_url, "no STAC collection", "run `sm1km catalog --config run.yaml`")
        return
    docs: list[tuple[str, Mapping[str, Any]]] = [(col_url, col)]
    for link in col.get("links", []):
        if link.get("rel") in ("item", "child"):
            u = _asset_url(col_url, link["href"])
            doc = store.read_json(u, so)
            if doc is None:
                chk.fail(u, "linked from collection.json but missing", "re-run `sm1km catalog --config run.yaml`")
                continue
            docs.append((u, doc))
    for doc_url, doc in docs:
        for asset in (doc.get("assets") or {}).values():
            u = _asset_url(doc_url, asset["href"])
            chk.items += 1
            zarr_like = "zarr" in str(asset.get("type", "")) or u.rstrip("/").endswith(".zarr")
            fs, path = store.filesystem(u, so)
            if not fs.exists(posixpath.join(path, "zarr.json") if zarr_like else path):
                chk.fail(u, f"asset of {doc_url} does not exist",
                         "re-run the stage that writes it, then `sm1km catalog --config run.yaml`")

