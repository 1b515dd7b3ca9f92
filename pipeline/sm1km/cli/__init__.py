"""The ``sm1km`` command line: thin argument parsing around the stage functions.

Each stage lives in its own module which exposes ``add_arguments(parser)`` and
``run_cli(args) -> int``. The table below maps command names to modules; a module that does not
exist yet (or lacks those two functions) makes its command say "not built yet" and exit 2.
Modules are imported only for the command that runs, so ``sm1km --help`` stays fast.

Errors of the :class:`~sm1km.errors.Sm1kmError` family print one paragraph (no traceback) and
exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sm1km._version import __version__
from sm1km.errors import Sm1kmError

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("sm1km.cli.config", "print an example config or validate one"),
    "synth": ("sm1km.synth", "generate the built-in synthetic world (inputs in real formats + truth)"),
    "inspect": ("sm1km.storage.readers.inspect", "describe input files (CCI, ERA5, ISMN, rasters) as JSON lines"),
    "ingest": ("sm1km.stages.ingest", "ingest raw inputs into Zarr cubes (0.25° and 1 km) and a station table"),
    "fuse": ("sm1km.cli.fuse", "fuse CCI with rescaled ERA5 into a gap-free 25 km daily cube"),
    "train": ("sm1km.stages.train", "train the XGBoost downscaling model on ISMN stations, with CV and a model card"),
    "downscale": ("sm1km.cli.downscale", "apply the model chunk-wise to write the 1 km Zarr master"),
    "aggregate": ("sm1km.stages.aggregate", "monthly means of the 1 km master"),
    "export": ("sm1km.stages.export", "export GeoTIFF (COG) / HDF5 deliverables from the master"),
    "validate": ("sm1km.validation.validate", "metrics against stations and truth; HTML report"),
    "catalog": ("sm1km.cli.catalog", "write a STAC catalog of the products"),
    "verify": ("sm1km.validation.verify", "check a store against the conventions (CF, encoding, coverage)"),
    "run": ("sm1km.stages.pipeline", "run every stage of a config in order (resumable)"),
    "demo": ("sm1km.cli.demo", "synthesise the demo world and run the whole pipeline on it"),
    "bench": ("sm1km.cli.bench", "run the benchmarks and write JSON"),
}


def _load(command: str):
    modname = COMMANDS[command][0]
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            return None
        raise
    if not (hasattr(mod, "add_arguments") and hasattr(mod, "run_cli")):
        return None
    return mod


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sm1km",
        description="Gap-free 1 km daily surface soil moisture: fusion, downscaling, delivery.",
    )
    parser.add_argument("--version", action="version", version=f"sm1km {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            mod = _load(name)
            if mod is not None:
                mod.add_arguments(p)
            else:
                p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    import os

    # distributed configures its own loggers from dask config when imported: keep them quiet
    # unless asked (-vv), in this process and in the worker processes it spawns.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning" if verbose < 2 else "info")
    level = logging.WARNING if quiet else (logging.INFO if verbose <= 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("distributed", "botocore", "aiobotocore", "s3fs", "fsspec", "asyncio", "urllib3", "rasterio",
                  "numcodecs", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    mod = _load(args.command)
    if mod is None:
        print(f"sm1km {args.command}: not built yet in sm1km {__version__}.", file=sys.stderr)
        return 2
    try:
        rc = mod.run_cli(args)
    except Sm1kmError as exc:
        print(f"sm1km {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sm1km {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
