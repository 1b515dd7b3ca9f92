"""Progress bars: a short stage shows a tqdm bar on a terminal (a pseudo-TTY), none on a pipe or with -q."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap

from sm1km.runtime.runner import run_tasks

SCRIPT = textwrap.dedent("""
    import logging, sys, time
    from sm1km.runtime.runner import run_tasks
    logging.basicConfig(level=logging.WARNING if "-q" in sys.argv else logging.INFO, stream=sys.stderr)
    def slow(i):
        time.sleep(0.05)
        return i
    assert list(run_tasks(None, slow, range(6), name="shortstage")) == list(range(6))
    print("done")
""")

BAR_CHARS = ("%|", "/6 [")  # what a tqdm bar draws: "name:  67%|███▎  | 4/6 [00:00<…]"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SM1KM_NO_PROGRESS")}
    env["COLUMNS"] = "100"
    return env


def _drain(master: int) -> str:
    data = b""
    while select.select([master], [], [], 0.5)[0]:
        chunk = os.read(master, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


def _run_on_pty(*args: str, **env: str) -> str:
    """stderr of the script on a pseudo-terminal (stdout on a pipe). The slave end stays open here
    until the child has exited, so what it wrote stays readable (no EIO race)."""
    master, slave = pty.openpty()
    # a terminal 100 columns wide (a fresh pty is 0×0, and tqdm draws a bar as wide as the terminal)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        p = subprocess.run([sys.executable, "-c", SCRIPT, *args], stdout=subprocess.PIPE, stderr=slave,
                           env={**_env(), **env}, timeout=120)
        assert p.returncode == 0 and p.stdout.strip() == b"done"
        return _drain(master)
    finally:
        os.close(slave)
        os.close(master)


def test_a_terminal_shows_a_bar():
    err = _run_on_pty()
    assert "shortstage" in err and all(c in err for c in BAR_CHARS), err


def test_quiet_on_a_terminal_shows_no_bar():
    err = _run_on_pty("-q")
    assert not any(c in err for c in BAR_CHARS) and "shortstage" not in err, err


def test_a_pipe_shows_no_bar_but_the_log_lines():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 0
    assert not any(c in p.stderr for c in BAR_CHARS), p.stderr
    assert "shortstage: 6/6 done" in p.stderr


def test_ci_shows_no_bar_even_on_a_terminal():
    err = _run_on_pty(CI="true")
    assert not any(c in err for c in BAR_CHARS) and "shortstage: 6/6 done" in err, err


def test_a_progress_callback_sees_every_task():
    seen = []
    assert list(run_tasks(None, abs, [-1, -2, -3], progress=lambda d, t: seen.append((d, t)))) == [1, 2, 3]
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_the_dashboard_link_is_logged_once(caplog, tmp_path):
    """A Pipeline hands one client to every stage: its dashboard link is logged the first time only."""
    import logging

    from distributed import Client, LocalCluster

    from sm1km.runtime.client import stage_client
    from sm1km.testing.worlds import cells_config

    cfg = cells_config(str(tmp_path))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        with caplog.at_level(logging.INFO, logger="sm1km.runtime.cluster"):
            for _ in range(3):
                with stage_client(cfg, client):
                    pass
        lines = [r.getMessage() for r in caplog.records if r.name == "sm1km.runtime.cluster"
                 and r.levelno >= logging.INFO]
        assert lines == [f"dask client (dashboard: {client.dashboard_link})"]


def test_quiet_holds_for_every_verb(tmp_path):
    """``sm1km -q demo`` prints only warnings: no summary on stdout, no INFO line on stderr (demo no
    longer raises the sm1km logger back to INFO); ``-q synth`` prints nothing either."""
    from sm1km.testing.worlds import child_env

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sm1km.cli", "-q", *args], capture_output=True, text=True,
                              env=child_env(), timeout=600)

    p = cli("synth", "--workdir", str(tmp_path / "w"), "--preset", "tiny", "--days", "6")
    assert p.returncode == 0 and p.stdout == "" and " INFO " not in p.stderr, p.stderr
    p = cli("demo", "--workdir", str(tmp_path / "demo"), "--preset", "tiny")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and " INFO " not in p.stderr and "%|" not in p.stderr, p.stderr
    assert (tmp_path / "demo" / "store" / "report" / "index.html").exists()
