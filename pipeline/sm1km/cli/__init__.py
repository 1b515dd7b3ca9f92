"""The ``sm1km`` command line: thin argument parsing around the stage functions.

One module per verb, ``cli/<verb>.py``, with ``add_arguments(parser)`` and ``run(args) -> int``:
it parses and prints, and calls the stage's Python function (``sm1km fuse`` -> :mod:`sm1km.cli.fuse`
-> :func:`sm1km.stages.fuse.fuse`). :data:`COMMANDS` maps each verb to those two functions. A verb
module imports its stage inside ``run`` (and, for option defaults, inside ``add_arguments``), and
only the verb being run gets its options added, so ``sm1km --version`` / ``--help`` stay fast.
Adding a verb: a module here and one line in :data:`COMMANDS`.

Errors of the :class:`~sm1km.errors.Sm1kmError` family print one paragraph (no traceback) and
exit with code 2; Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from sm1km._version import __version__
from sm1km.cli import (
    aggregate,
    bench,
    catalog,
    config,
    demo,
    downscale,
    export,
    fuse,
    ingest,
    inspect,
    predictors,
    promote,
    run,
    synth,
    train,
    update,
    validate,
    verify,
)
from sm1km.errors import Sm1kmError
from sm1km.redact import install_log_redaction, redact_text


class Verb:
    """One command: its one-line help, the function adding its options, the function running it.

    (A plain class, not a NamedTuple or dataclass: importing ``typing`` / ``dataclasses`` would be
    most of what ``sm1km --version`` costs.)
    """

    __slots__ = ("help", "add_arguments", "run")

    def __init__(self, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                 run: Callable[[argparse.Namespace], int]) -> None:
        self.help = help
        self.add_arguments = add_arguments
        self.run = run

    def __repr__(self) -> str:
        return f"Verb({self.help!r}, {self.add_arguments.__module__}.add_arguments, {self.run.__module__}.run)"


#: command -> Verb. Order is the order of ``sm1km --help``.
COMMANDS: dict[str, Verb] = {
    "config": Verb("print an example config or validate one", config.add_arguments, config.run),
    "synth": Verb("generate the built-in synthetic world (inputs in real formats + truth)",
                  synth.add_arguments, synth.run),
    "inspect": Verb("describe input files (CCI, ERA5, ISMN, rasters) as JSON lines", inspect.add_arguments,
                    inspect.run),
    "predictors": Verb("derive the static predictor rasters (terrain, soil, land cover) from public downloads",
                       predictors.add_arguments, predictors.run),
    "ingest": Verb("ingest raw inputs into Zarr cubes (0.25° and 1 km) and a station table", ingest.add_arguments,
                   ingest.run),
    "fuse": Verb("fuse CCI with rescaled ERA5 into a gap-free 25 km daily cube", fuse.add_arguments, fuse.run),
    "train": Verb("train the XGBoost downscaling model on ISMN stations, with CV and a model card",
                  train.add_arguments, train.run),
    "downscale": Verb("apply the model chunk-wise to write the 1 km Zarr master", downscale.add_arguments,
                      downscale.run),
    "aggregate": Verb("monthly means of the 1 km master", aggregate.add_arguments, aggregate.run),
    "export": Verb("export GeoTIFF (COG) / HDF5 / netCDF deliverables from the master", export.add_arguments, export.run),
    "validate": Verb("metrics against stations and truth; HTML report", validate.add_arguments, validate.run),
    "catalog": Verb("write a STAC catalog of the products", catalog.add_arguments, catalog.run),
    "promote": Verb("publish a finished run under a stable prefix (readers switch in one atomic step)",
                    promote.add_arguments, promote.run),
    "verify": Verb("check a store against the conventions (CF, encoding, coverage)", verify.add_arguments,
                   verify.run),
    "run": Verb("run every stage of a config in order (resumable)", run.add_arguments, run.run),
    "update": Verb("bring every product up to date for new or revised days (model pinned)", update.add_arguments,
                   update.run),
    "demo": Verb("synthesise the demo world and run the whole pipeline on it", demo.add_arguments, demo.run),
    "bench": Verb("run the benchmarks and write JSON", bench.add_arguments, bench.run),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every verb; only ``command``'s options are added (the others are not needed)."""
    parser = argparse.ArgumentParser(
        prog="sm1km",
        description="Gap-free 1 km daily surface soil moisture: fusion, downscaling, delivery.",
    )
    parser.add_argument("--version", action="version", version=f"sm1km {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, verb in COMMANDS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        if name == command:
            verb.add_arguments(p)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    import os

    # distributed configures its own loggers from dask config when imported: keep them quiet
    # unless asked (-vv), in this process and in the worker processes it spawns.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning" if verbose < 2 else "info")
    level = logging.WARNING if quiet else (logging.INFO if verbose <= 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_log_redaction()
    for noisy in ("distributed", "botocore", "aiobotocore", "s3fs", "fsspec", "asyncio", "urllib3", "rasterio",
                  "numcodecs", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        # a verb's options may need something that is not there (``bench`` without its harness)
        parser = build_parser(command)
    except Sm1kmError as exc:
        print(f"sm1km {command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _setup_logging(args.verbose, args.quiet)
    try:
        rc = COMMANDS[args.command].run(args)
    except Sm1kmError as exc:
        print(f"sm1km {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sm1km {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    return int(rc or 0)


__all__ = ["COMMANDS", "Verb", "build_parser", "main"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
