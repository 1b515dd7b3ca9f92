"""The stage contract as one test suite: :class:`StageContractTests`, subclassed once per stage.

In the spirit of zarr-python's ``zarr.testing.store.StoreTests`` (one conformance suite, a
subclass per store kind): a subclass names a stage, how its finished units show in the store
tree (:class:`Units`), where to SIGKILL it (:class:`KillPoint`) and how to provoke an input error;
the base class's tests check, on a **local root and an S3 root** (the moto server fixture
``moto_server`` of the test suite's ``conftest.py``):

1. **re-run is a no-op and byte-identical** — run on the root of a finished run, the stage leaves
   every object with the same bytes, rewrites no object of a finished unit, and (where its
   ``StageResult.stats`` counts units) writes none;
2. **killed and re-run is byte-identical and redoes no finished unit** — a subprocess running the
   stage is SIGKILLed when the n-th object matching a :class:`KillPoint` starts to be written (a
   point in the stage's own progress, not in wall time: in the unit loop, and for the Zarr stages
   also while the store's template is written); the re-run then leaves every object byte-identical
   to an uninterrupted run's, rewrites no object of the units finished before the kill (local:
   inode + mtime; S3: ``LastModified``), skips exactly those (where the stats count skipped
   units), and the killed run left no store claiming to be complete (consolidated metadata,
   ``time_coverage_end``);
3. **an input error leaves every store unchanged** — the checksum of every object under the root
   before and after (nothing excluded but the lock's generation counter, ``trees.LOCK_STATE``: no
   lock, no staging, no temporary file may remain);
4. **a second concurrent run is refused** — while another run holds the root's run lock
   (``storage/lock/``), the stage's CLI verb exits with code 2 naming the holder, and writes nothing.

Every run starts from the root tree of a finished tiny run (``sm1km.testing.worlds.tiny_run``: the
world and all stages built once per session) and writes with fixed timestamps
(``SOURCE_DATE_EPOCH``), so two runs are comparable byte for byte ("byte-identical": same md5 per
object; on S3 the ETag of the listing, so the check downloads nothing). What the comparisons
after a kill leave out is ``sm1km.testing.trees.NOT_STORES`` (``_locks/``: the killed run's lock;
``_staging/``: a killed ingest's scratch). Nothing else is excluded or normalised.

Use::

    class TestDownscaleContract(StageContractTests):
        stage = "downscale"
        units = LedgerUnits("master.zarr")
        kill_at = (KillPoint("master.zarr/sm/c/*", 7),                  # in the 7th of 12 shards
                   KillPoint("master.zarr/lat/c/*", 1, name="template"))  # while the template is written
        input_error = ModelError

        def break_input(self, root, scratch):
            root.flip_byte("model/model.ubj")

        def run_cli(self, argv):
            return sm1km.cli.main(argv)   # the CLI tier is above this one
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import multiprocessing
import os
import posixpath
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sm1km.config import RunConfig
from sm1km.errors import InputError
from sm1km.storage import store
from sm1km.storage.lock import StoreLock
from sm1km.testing import trees
from sm1km.testing.worlds import TINY_OPTIONS, TinyRun, child_env, fixed_timestamps, stage_function, tiny_run

log = logging.getLogger(__name__)

#: seconds a killed-run subprocess may take before the test gives up on it
CHILD_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# what a subclass says
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillPoint:
    """SIGKILL the stage when the ``nth`` distinct object whose key (relative to the root) matches
    ``pattern`` (``fnmatch``: ``*`` also crosses ``/``) starts to be written — locally at its
    ``open`` for writing or the rename that moves it into place, whichever comes first (a temporary
    name of an atomic write counts as the object it becomes); on S3 at its PUT, before the request
    is sent. Files written by C libraries (GDAL) are seen at their rename only, and so is a
    ``zarr.json`` that zarr's LocalStore writes (its temporary name drops the ``.json``). Zarr skips
    chunks that are all fill: pick a pattern of objects the stage really writes."""

    pattern: str
    nth: int
    #: leave the object as a kill right after its ``open`` leaves it: created, empty (local roots,
    #: objects written in place; an S3 PUT is all or nothing)
    torn: bool = False
    #: the test id (``units``: in the unit loop; ``template``: while the store's template is written)
    name: str = "units"


class Units:
    """How a stage's units of work show in the root's object tree."""

    def finished(self, tree: Mapping[str, bytes]) -> set[str]:
        """The units complete in ``tree``."""
        raise NotImplementedError

    def objects(self, unit: str, tree: Mapping[str, bytes]) -> set[str]:
        """The keys of ``tree`` that belong to ``unit`` (its data and its marker)."""
        raise NotImplementedError

    def objects_of(self, units: Iterable[str], tree: Mapping[str, bytes]) -> set[str]:
        out: set[str] = set()
        for u in units:
            out |= self.objects(u, tree)
        return out

    def skipped(self, done: set[str], stats: Mapping[str, Any]) -> int | None:
        """How many units a re-run reports skipped (``StageResult.stats``) when ``done`` were finished;
        ``stats``: the uninterrupted run's. Default: one unit of the stats per unit here."""
        return len(done)

    def claims_complete(self, tree: Mapping[str, bytes]) -> list[str]:
        """What in ``tree`` claims that the stage's output is complete (checked while units are
        missing: after the kill). Default: nothing to check."""
        return []


def _is_region_key(key: str) -> bool:
    return all(re.fullmatch(r"(\w+?)-(\d+)-(\d+)", part) for part in key.split("_"))


def _parse_region_key(key: str) -> dict[str, tuple[int, int]]:
    """``lat-0-20_lon-0-20_time-0-4`` (``store.region_key``) -> {dim: (start, stop)}."""
    out = {}
    for part in key.split("_"):
        m = re.fullmatch(r"(\w+?)-(\d+)-(\d+)", part)
        if not m:
            raise ValueError(f"not a region key: {key!r}")
        out[m[1]] = (int(m[2]), int(m[3]))
    return out


@dataclass(frozen=True)
class LedgerUnits(Units):
    """Regions of one Zarr store, each marked done by ``_ledger/<store>/<region key>.json``; a
    unit's objects are its marker and every chunk (shard) object of the store's arrays whose index
    box lies inside the region (arrays that lack one of the region's dimensions are not units)."""

    store: str

    @property
    def prefix(self) -> str:
        return f"_ledger/{self.store}/"

    def finished(self, tree):
        # region markers only: the ledger folder also holds storage.deps' blocks.json (and days.json)
        return {k[len(self.prefix):-5] for k in tree
                if k.startswith(self.prefix) and k.endswith(".json") and "/" not in k[len(self.prefix):]
                and _is_region_key(k[len(self.prefix):-5])}

    def claims_complete(self, tree):
        """The store's root ``zarr.json`` with consolidated metadata or ``time_coverage_end``
        (``store.finalize`` writes both last)."""
        meta = tree.get(f"{self.store}/zarr.json")
        if meta is None:
            return []
        doc = json.loads(meta)
        return [f"{self.store}/zarr.json: {k}" for k in ("consolidated_metadata",) if doc.get(k)] + \
            [f"{self.store}/zarr.json: attribute {k}" for k in ("time_coverage_end",) if k in doc.get("attributes", {})]

    def objects(self, unit, tree):
        region = _parse_region_key(unit)
        out = {f"{self.prefix}{unit}.json"} & set(tree)
        for meta_key, grid in _chunk_grids(self.store, tree).items():
            dims, shape = grid
            if not set(region) <= set(dims):
                continue
            array = meta_key[: -len("/zarr.json")]
            for k in tree:
                parts = k[len(array) + 3:].split("/") if k.startswith(array + "/c/") else []
                if len(parts) != len(dims) or not all(p.isdigit() for p in parts):
                    continue
                box = {d: (int(i) * s, (int(i) + 1) * s) for d, i, s in zip(dims, parts, shape, strict=True)}
                if all(region[d][0] <= box[d][0] and box[d][1] <= region[d][1] for d in region):
                    out.add(k)
        return out


def _chunk_grids(store_name: str, tree: Mapping[str, bytes]) -> dict[str, tuple[list[str], list[int]]]:
    """{array zarr.json key: (dimension names, chunk shape of the outer grid)} of a store in ``tree``."""
    out = {}
    for k in tree:  # keys first: a lazy tree fetches only the metadata it is asked for
        if not (k.startswith(store_name + "/") and k.endswith("/zarr.json")):
            continue
        meta = json.loads(tree[k])
        if meta.get("node_type") != "array":
            continue
        shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        out[k] = (list(meta.get("dimension_names") or []), list(shape))
    return out


@dataclass(frozen=True)
class StoreUnits(Units):
    """Whole stores, each complete once ``_ledger/<store>/<index>`` exists (ingest); a unit's
    objects are everything under ``<store>/`` and ``_ledger/<store>/``."""

    stores: tuple[str, ...]
    index: str = "ingest-index.json"

    def finished(self, tree):
        return {s for s in self.stores if f"_ledger/{s}/{self.index}" in tree}

    def objects(self, unit, tree):
        return {k for k in tree if k.startswith((unit + "/", f"_ledger/{unit}/"))}

    def skipped(self, done, stats):
        """The stage counts smaller units (days, blocks) per store: ``stats["stores"][store]``."""
        per_store = stats.get("stores") or {}
        if not all(s in per_store for s in done):
            return None
        return sum(int(per_store[s]["units_total"]) for s in done)


@dataclass(frozen=True)
class FileUnits(Units):
    """Files under ``prefix``, each its own unit, finished once present (exports, reports, catalogs)."""

    prefix: str

    def finished(self, tree):
        return {k for k in tree if k.startswith(self.prefix.rstrip("/") + "/") and not _is_temporary(k)}

    def objects(self, unit, tree):
        return {unit} & set(tree)


@dataclass(frozen=True)
class OneUnit(Units):
    """One unit made of ``keys`` (train: the model files), finished once ``done`` exists."""

    name: str
    keys: tuple[str, ...]
    done: str

    def finished(self, tree):
        return {self.name} if self.done in tree else set()

    def objects(self, unit, tree):
        return set(self.keys) & set(tree)


# temporary names of atomic writes: ``x.tmp`` (ledger, model, metrics.json), ``x.part`` (exports),
# ``.x.<pid>.<hex>.partial`` (store.put_atomic), ``x.<uuid hex>.partial`` (zarr's LocalStore)
_TEMPORARY = (re.compile(r"^(?P<name>.+)\.(tmp|part)$"), re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]+\.partial$"),
              re.compile(r"^(?P<name>.+)\.[0-9a-f]{32}\.partial$"))


def _final_key(key: str) -> str:
    """The object a temporary file of an atomic write becomes (the key itself otherwise)."""
    head, name = posixpath.split(key)
    for rx in _TEMPORARY:
        m = rx.match(name)
        if m:
            return posixpath.join(head, m["name"])
    return key


def _is_temporary(key: str) -> bool:
    return _final_key(key) != key


# --------------------------------------------------------------------------------------------
# one store root under test
# --------------------------------------------------------------------------------------------
@dataclass
class ContractRoot:
    """A store root (local folder or ``s3://bucket/prefix``) and the run config on it."""

    backend: str
    url: str
    cfg: RunConfig
    run_yaml: Path
    #: trees put here before, whose bytes stand in for objects with the same md5 (no download)
    known: list[Mapping[str, bytes]] = field(default_factory=list)

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.cfg.store.storage_options()

    def reset(self, tree: Mapping[str, bytes]) -> None:
        """Make the root hold exactly ``tree`` (writing only the objects that differ)."""
        trees.sync(self.url, tree, self.storage_options)
        if not any(t is tree for t in self.known):
            self.known.append(tree)

    def tree(self, exclude: Iterable[str] = trees.NOT_STORES) -> trees.RootTree:
        """Every object under the root now (md5 + write stamp; bytes on demand)."""
        return trees.listing(self.url, self.storage_options, exclude=exclude, known=self.known)

    def read(self, key: str) -> bytes:
        fs, path = store.filesystem(store.join(self.url, key), self.storage_options)
        return fs.cat_file(path)

    def write(self, key: str, data: bytes) -> None:
        """Replace one object (to damage an input)."""
        store.put_atomic(store.join(self.url, key), data, self.storage_options)

    def flip_byte(self, key: str) -> None:
        """Damage one object: the byte in its middle inverted."""
        raw = bytearray(self.read(key))
        raw[len(raw) // 2] ^= 0xFF
        self.write(key, bytes(raw))


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run of the stage on a root: the tree it leaves and what it returned."""

    tree: trees.Tree
    result: Any


_REFERENCES: dict[tuple[str, str, str], Reference] = {}


def _stat(result: Any, what: str) -> int | None:
    """``units_<what>`` from a StageResult's stats (or the older ``shards_`` / ``chunks_`` names)."""
    stats = getattr(result, "stats", None) or {}
    for unit in ("units", "shards", "chunks"):
        if f"{unit}_{what}" in stats:
            return int(stats[f"{unit}_{what}"])
    return None


@functools.cache
def _bucket(endpoint_url: str) -> str:
    """One bucket for the contract suite on this S3 endpoint (per process)."""
    import s3fs  # type: ignore[import-untyped]

    name = f"contract-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(endpoint_url=endpoint_url, skip_instance_cache=True).mkdir(name)
    return name


BACKENDS = ("local", pytest.param("s3", marks=[pytest.mark.slow, pytest.mark.network]))


# --------------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------------
class StageContractTests:
    """The four checks of the stage contract; subclass once per stage (see the module docstring)."""

    #: the stage (``sm1km.testing.worlds.STAGE_ORDER``): its callable, its CLI verb
    stage: ClassVar[str]
    #: how its finished units show in the tree
    units: ClassVar[Units]
    #: where the killed run is SIGKILLed (one test per point)
    kill_at: ClassVar[KillPoint | tuple[KillPoint, ...]]
    #: what :meth:`break_input` makes the stage raise
    input_error: ClassVar[type[Exception]] = InputError
    #: options of every call (default: the tiny world's, ``worlds.TINY_OPTIONS``)
    options: ClassVar[Mapping[str, Any] | None] = None
    #: extra arguments of the CLI verb (after ``--config run.yaml``)
    cli_args: ClassVar[tuple[str, ...]] = ()
    #: contract checks this stage is known to fail today: ``{fnmatch pattern of the test id: reason}``.
    #: They run and are reported as xfail; ``strict`` ones turn the suite red the day they pass (then
    #: delete the entry). A pattern maps to ``(reason, strict)``.
    known_failures: ClassVar[Mapping[str, tuple[str, bool]]] = {}
    #: the stage of the tiny run whose pre-state the root starts from (None: :attr:`stage` itself;
    #: ``update`` starts where ``downscale`` does: inputs, fused cube and model there, no product yet)
    starts_from: ClassVar[str | None] = None

    @property
    def pre_stage(self) -> str:
        return self.starts_from or self.stage

    # -- hooks ---------------------------------------------------------------------------------
    def break_input(self, root: ContractRoot, scratch: Path) -> RunConfig | None:
        """Damage an input of the stage (an object under the root, or a copy of an input file under
        ``scratch``); return the config that meets the damage (None: ``root.cfg``)."""
        raise NotImplementedError

    def run_cli(self, argv: list[str]) -> int:
        """``sm1km ARGV`` in this process (the test module passes ``sm1km.cli.main``: the CLI tier
        is above this one)."""
        raise NotImplementedError

    def call(self, cfg: RunConfig) -> Any:
        """One run of the stage (timestamps fixed)."""
        with fixed_timestamps():
            return stage_function(self.stage)(cfg, **self.stage_options())

    def stage_options(self) -> dict[str, Any]:
        return dict(self.options if self.options is not None else TINY_OPTIONS.get(self.stage, {}))

    # -- fixtures ------------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _known_failure(self, request):
        for pattern, (reason, strict) in self.known_failures.items():
            if fnmatch.fnmatch(request.node.name, pattern):
                request.applymarker(pytest.mark.xfail(reason=reason, strict=strict))
        yield

    def pytest_generate_tests(self, metafunc):
        if "kill" in metafunc.fixturenames:
            points = self.kill_at if isinstance(self.kill_at, tuple) else (self.kill_at,)
            metafunc.parametrize("kill", points, ids=[p.name for p in points])

    @pytest.fixture
    def tiny(self, tmp_path_factory) -> TinyRun:
        """Every stage run once on the tiny world (built once per session, in the session's folder)."""
        return tiny_run(tmp_path_factory.getbasetemp())

    @pytest.fixture(params=BACKENDS)
    def root(self, request, tiny, tmp_path_factory) -> ContractRoot:
        """The stage's root on this backend, holding what a finished run had before the stage."""
        base = tmp_path_factory.getbasetemp() / "contract" / self.stage
        if request.param == "s3":
            endpoint = request.getfixturevalue("moto_server")
            url = f"s3://{_bucket(endpoint)}/{self.stage}"
        else:
            endpoint, url = None, str(base / "store")
        cfg = tiny.config(url, endpoint_url=endpoint)
        root = ContractRoot(request.param, url, cfg, tiny.world.write_run_yaml(cfg, base / request.param))
        root.reset(tiny.before[self.pre_stage])
        return root

    def reference(self, root: ContractRoot, tiny: TinyRun) -> Reference:
        """The uninterrupted run on ``root`` (once per session); leaves ``root`` at the pre-state."""
        key = (type(self).__qualname__, self.stage, root.url)  # two suites of one stage (export's formats)
        if key not in _REFERENCES:
            root.reset(tiny.before[self.pre_stage])
            result = self.call(root.cfg)
            _REFERENCES[key] = Reference(root.tree(exclude=trees.LOCK_STATE).materialize(), result)
            root.reset(tiny.before[self.pre_stage])
        ref = _REFERENCES[key]
        root.known.append(ref.tree)
        assert self.units.finished(ref.tree), f"{self.stage}: no finished unit after a whole run ({self.units})"
        return ref

    # -- 1 ---------------------------------------------------------------------------------------
    def test_rerun_is_a_noop_and_byte_identical(self, root, tiny):
        ref = self.reference(root, tiny)
        root.reset(ref.tree)
        before = root.tree(exclude=trees.LOCK_STATE).stamps
        trees.next_stamp_tick(root.url)
        result = self.call(root.cfg)
        after = root.tree(exclude=trees.LOCK_STATE)
        trees.assert_same(ref.tree, after, what=f"{self.stage} re-run vs first run ({root.backend})")
        units = self.units.finished(ref.tree)
        again = trees.rewritten(before, after.stamps, self.units.objects_of(units, ref.tree))
        assert not again, (f"{self.stage}: a re-run on a finished root rewrote {len(again)} object(s) of finished "
                           "units:\n" + "\n".join(again[:20]))
        written = _stat(result, "written")
        if written is not None:
            assert written == 0, f"{self.stage}: a re-run wrote {written} units: {result.stats}"

    # -- 2 ---------------------------------------------------------------------------------------
    @pytest.mark.slow
    def test_killed_then_rerun_is_byte_identical_and_redoes_no_finished_unit(self, root, tiny, kill, tmp_path):
        ref = self.reference(root, tiny)
        all_units = self.units.finished(ref.tree)
        rc, logtext = run_killed(self.stage, root.cfg, self.stage_options(), kill, tmp_path / "killed.log")
        assert rc == -signal.SIGKILL, (f"{self.stage}: the run was to be SIGKILLed at the {kill.nth}th "
                                       f"object matching {kill.pattern!r} but ended with {rc}:\n{logtext}")
        at_kill = root.tree(exclude=trees.LOCK_STATE)
        done = self.units.finished(at_kill)
        assert len(done) < len(all_units), f"{self.stage}: every unit was finished before the kill ({kill})"
        if kill.name == "units":
            assert done or len(all_units) == 1, f"{self.stage}: no unit was finished before the kill ({kill})"
        claims = self.units.claims_complete(at_kill)
        assert not claims, f"{self.stage}: the killed run claims a complete store: {claims}"

        trees.next_stamp_tick(root.url)
        result = self.call(root.cfg)
        after = root.tree()
        trees.assert_same(ref.tree, after, what=(f"{self.stage} killed ({len(done)} of {len(all_units)} units "
                                                  f"done) and re-run vs uninterrupted run ({root.backend})"))
        redone = trees.rewritten(at_kill.stamps, after.stamps, self.units.objects_of(done, at_kill))
        assert not redone, (f"{self.stage}: the re-run after the kill rewrote {len(redone)} object(s) of the "
                            f"{len(done)} units finished before it:\n" + "\n".join(redone[:20]))
        skipped = _stat(result, "skipped")
        expected = self.units.skipped(done, getattr(ref.result, "stats", None) or {})
        if skipped is not None and expected is not None:
            assert skipped == expected, (f"{self.stage}: {sorted(done)} were done before the kill ({expected} units), "
                                         f"the re-run skipped {skipped}: {result.stats}")

    # -- 3 ---------------------------------------------------------------------------------------
    def test_input_error_leaves_every_store_unchanged(self, root, tiny, tmp_path):
        cfg = self.break_input(root, tmp_path) or root.cfg
        before = root.tree(exclude=trees.LOCK_STATE)
        with pytest.raises(self.input_error):
            self.call(cfg)
        trees.assert_same(before, root.tree(exclude=trees.LOCK_STATE),
                          what=f"{self.stage}: the root before and after an {self.input_error.__name__}")

    # -- 4 ---------------------------------------------------------------------------------------
    def test_second_concurrent_run_is_refused(self, root, capsys):
        before = root.tree()
        holder = StoreLock(root.url, root.storage_options, stage="another-run", heartbeat_s=60)
        with holder:
            capsys.readouterr()
            rc = self.run_cli([self.stage, "--config", str(root.run_yaml), *self.cli_args])
            err = capsys.readouterr().err
        refusal = f"sm1km {self.stage}: error: "
        assert rc == 2 and refusal in err and "being written by another run" in err, (
            f"sm1km {self.stage} beside another run holding the lock of {root.url}: exit code {rc}\n{err[-2000:]}")
        assert "stage 'another-run'" in err and f"pid {os.getpid()}" in err, f"the refusal names no holder:\n{err}"
        trees.assert_same(before, root.tree(), what=f"{self.stage}: the root before and after a refused run")


# --------------------------------------------------------------------------------------------
# the killed run: a subprocess that SIGKILLs itself at the kill point
# --------------------------------------------------------------------------------------------
#: imported once by the fork server, so that every killed run starts in milliseconds
PRELOAD = ("sm1km.testing.contract", "sm1km.stages.ingest", "sm1km.stages.fuse", "sm1km.stages.train",
           "sm1km.stages.downscale", "sm1km.stages.aggregate", "sm1km.stages.export", "sm1km.stages.catalog",
           "sm1km.validation.validate", "sm1km.pipeline", "s3fs")


@functools.cache
def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def run_killed(stage: str, cfg: RunConfig, options: Mapping[str, Any], kill: KillPoint, log_path: Path,
               timeout: float = CHILD_TIMEOUT_S) -> tuple[int | None, str]:
    """Run ``stage`` on ``cfg`` in a subprocess that SIGKILLs itself at ``kill``; (exit code, log).

    Exit code ``-9``: killed at the point; ``3``: the stage finished without reaching it.
    """
    spec = {"stage": stage, "cfg": cfg, "options": dict(options), "kill": kill, "log": str(log_path),
            "env": child_env()}
    proc = _context().Process(target=_child_main, args=(spec,), name=f"killed-{stage}", daemon=True)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(30)
    text = Path(log_path).read_text(errors="replace")[-4000:] if Path(log_path).exists() else ""
    return proc.exitcode, text


def _child_main(spec: dict) -> None:
    fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(spec["env"])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    cfg: RunConfig = spec["cfg"]
    kill: KillPoint = spec["kill"]
    _install_kill(cfg.store.root, kill)
    stage_function(spec["stage"])(cfg, **spec["options"])
    print(f"finished without reaching the kill point {kill}", flush=True)
    os._exit(3)


def _counter(kill: KillPoint, tear: Callable[[str], None] | None = None) -> Callable[[str, str], None]:
    """``saw(key, path)`` for every write seen: SIGKILL at the ``nth`` distinct matching object
    (``tear(path)`` first, when the kill point is torn and ``path`` is the object itself)."""
    seen: set[str] = set()

    def saw(key: str, path: str = "") -> None:
        final = _final_key(key)
        if final in seen or not fnmatch.fnmatchcase(final, kill.pattern):
            return
        seen.add(final)
        if len(seen) >= kill.nth:
            torn = False
            if kill.torn and tear is not None and path and final == key:
                tear(path)
                torn = True
            print(f"SIGKILL at the start of write {len(seen)}: {key}{' (left empty)' if torn else ''}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # pragma: no cover
    return saw


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install_kill(root: str, kill: KillPoint) -> None:
    if not store.is_remote(root):
        base = os.path.abspath(root.removeprefix("file://")) + os.sep
        tearing = []

        def tear(path: str) -> None:
            tearing.append(path)  # the hook sees this open too: let it pass
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))

        saw = _counter(kill, tear)

        def hook(event: str, args: tuple) -> None:
            if event == "open":
                path, mode, flags = args
                writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
            elif event == "os.rename":  # os.rename / os.replace: a file written elsewhere (GDAL) moved in
                path, writing = args[1], True
            else:
                return
            if not writing or path is None or isinstance(path, int):
                return
            p = os.path.abspath(os.fsdecode(path))
            if p.startswith(base) and not tearing:  # a rename is atomic: nothing to tear
                saw(p[len(base):].replace(os.sep, "/"), p if event == "open" else "")

        sys.addaudithook(hook)
        return

    import s3fs.core  # type: ignore[import-untyped]

    saw = _counter(kill)
    bucket, _, prefix = root.split("://", 1)[1].partition("/")
    prefix = prefix.strip("/")
    original = s3fs.core.S3FileSystem._call_s3

    async def _call_s3(self, method, *akwarglist, **kwargs):
        if method in ("put_object", "create_multipart_upload", "copy_object"):
            kw: dict[str, Any] = {}
            for d in akwarglist:
                kw.update(d)
            kw.update(kwargs)
            key = str(kw.get("Key", ""))
            if kw.get("Bucket") == bucket and key.startswith(prefix + "/"):
                saw(key[len(prefix) + 1:])
        return await original(self, method, *akwarglist, **kwargs)

    s3fs.core.S3FileSystem._call_s3 = _call_s3


__all__ = ["StageContractTests", "KillPoint", "Units", "LedgerUnits", "StoreUnits", "FileUnits", "OneUnit",
           "ContractRoot", "Reference", "run_killed", "BACKENDS", "CHILD_TIMEOUT_S"]
