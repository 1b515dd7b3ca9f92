"""``sm1km <verb> --help`` for every verb is what it was before the CLI moved into ``cli/<verb>.py`` ([12]).

The expected data under ``tests/data/cli_help/`` was generated from the code *before* that change
(``python tests/test_cli_help.py --write`` at commit 398bfa1) and is compared here in two ways:

* ``options.json``: every verb's options as argparse holds them (flags, dest, nargs, default, type,
  choices, required, metavar, help, mutually exclusive groups) and the verb's help line: independent
  of how a Python version formats help text;
* ``<verb>.txt``: the printed ``--help`` text at 100 columns, compared when the running Python is the
  minor version the text was recorded with (argparse's layout changes between versions).

A verb added later is added to the data by re-running the generator (and reviewing the diff).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data" / "cli_help"
COLUMNS = "100"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _action(a: argparse.Action) -> dict:
    return {
        "kind": type(a).__name__,
        "option_strings": list(a.option_strings),
        "dest": a.dest,
        "nargs": a.nargs,
        "const": repr(a.const),
        "default": repr(a.default),
        "type": getattr(a.type, "__name__", repr(a.type)) if a.type is not None else None,
        "choices": list(a.choices) if a.choices is not None and not isinstance(a, argparse._SubParsersAction)
        else None,
        "required": a.required,
        "metavar": a.metavar,
        "help": a.help,
    }


def describe_parser(p: argparse.ArgumentParser) -> dict:
    return {
        "prog": p.prog,
        "description": p.description,
        "actions": [_action(a) for a in p._actions],
        "exclusive_groups": [{"required": g.required, "dests": [a.dest for a in g._group_actions]}
                             for g in p._mutually_exclusive_groups],
    }


def describe_cli() -> dict:
    """Everything ``--help`` shows, for the top level and for every verb."""
    from sm1km.cli import COMMANDS, build_parser

    top = build_parser(None)
    sub = _subparsers(top)
    out = {"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
           "top": describe_parser(top),
           "verbs": {c.dest: {"help": c.help, "metavar": c.metavar} for c in sub._choices_actions},
           "verb_options": {}}
    for verb in COMMANDS:
        out["verb_options"][verb] = describe_verb(verb)
    return out


def describe_verb(verb: str) -> dict:
    from sm1km.cli import build_parser

    return describe_parser(_subparsers(build_parser(verb)).choices[verb])


def help_text(argv: list[str]) -> str:
    from sm1km.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as ei:
        main(argv)
    assert ei.value.code == 0, (argv, ei.value.code)
    return buf.getvalue()


def _expected() -> dict:
    return json.loads((DATA / "options.json").read_text())


def _verbs() -> list[str]:
    path = DATA / "options.json"
    return list(json.loads(path.read_text())["verb_options"]) if path.exists() else []


def test_the_same_verbs_in_the_same_order():
    from sm1km.cli import COMMANDS

    assert list(COMMANDS) == _verbs()


def test_top_level_options_and_verb_help_lines_unchanged():
    from sm1km.cli import build_parser

    top = build_parser(None)
    sub = _subparsers(top)
    want = _expected()
    assert describe_parser(top) == want["top"]
    assert {c.dest: {"help": c.help, "metavar": c.metavar} for c in sub._choices_actions} == want["verbs"]


@pytest.mark.parametrize("verb", _verbs())
def test_verb_options_unchanged(verb):
    assert describe_verb(verb) == _expected()["verb_options"][verb]


@pytest.mark.parametrize("verb", [None, *_verbs()])
def test_help_text_unchanged(verb, monkeypatch):
    if _expected()["python"] != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"help text recorded with Python {_expected()['python']} (argparse layout differs)")
    monkeypatch.setenv("COLUMNS", COLUMNS)
    argv = ["--help"] if verb is None else [verb, "--help"]
    name = "_top.txt" if verb is None else f"{verb}.txt"
    assert help_text(argv) == (DATA / name).read_text()


def _dumps(desc: dict) -> str:
    """``options.json`` as text: one line per option, so a diff shows which option changed."""
    def line(obj) -> str:
        return json.dumps(obj, ensure_ascii=False)

    def parser(pd: dict, ind: str) -> str:
        acts = ",\n".join(f"{ind}  {line(a)}" for a in pd["actions"])
        return (f'{{\n{ind} "prog": {line(pd["prog"])},\n{ind} "description": {line(pd["description"])},\n'
                f'{ind} "actions": [\n{acts}\n{ind} ],\n{ind} "exclusive_groups": {line(pd["exclusive_groups"])}\n{ind}}}')

    verbs = ",\n".join(f"  {line(k)}: {line(v)}" for k, v in desc["verbs"].items())
    opts = ",\n".join(f"  {line(k)}: {parser(v, '  ')}" for k, v in desc["verb_options"].items())
    text = (f'{{\n "python": {line(desc["python"])},\n "top": {parser(desc["top"], " ")},\n'
            f' "verbs": {{\n{verbs}\n }},\n "verb_options": {{\n{opts}\n }}\n}}\n')
    assert json.loads(text) == desc
    return text


def _write() -> None:  # pragma: no cover - the generator of the expected data
    import os

    os.environ["COLUMNS"] = COLUMNS
    DATA.mkdir(parents=True, exist_ok=True)
    desc = describe_cli()
    (DATA / "options.json").write_text(_dumps(desc))
    (DATA / "_top.txt").write_text(help_text(["--help"]))
    for verb in desc["verb_options"]:
        (DATA / f"{verb}.txt").write_text(help_text([verb, "--help"]))


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_cli_help.py --write   (records the current CLI as the expected data)")
    _write()
