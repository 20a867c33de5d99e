"""The command line as a user meets it: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelined.cli import with_port


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelined.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_a_host_without_port_gets_50051() -> None:
    assert with_port("gpu-box") == "gpu-box:50051"
    assert with_port("gpu-box:9000") == "gpu-box:9000"
    assert with_port("[::1]:7") == "[::1]:7"


def test_unreachable_server_is_one_line_and_exit_4() -> None:
    done = cli("--timeout", "1", "health", env={"PIPELINED_TARGET": "127.0.0.1:1"})
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("pipelined: UNAVAILABLE: ")
    assert "127.0.0.1:1" in done.stderr  # PIPELINED_TARGET was used
    assert len(done.stderr.strip().splitlines()) == 1


def test_usage_error_is_exit_2() -> None:
    assert cli("no-such-command").returncode == 2


def test_global_options_after_the_subcommand() -> None:
    done = cli("health", "--target", "127.0.0.1:1", "--timeout", "1")
    assert done.returncode == 4 and "127.0.0.1:1" in done.stderr
