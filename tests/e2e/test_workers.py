"""Several worker processes on one port: every worker serves, metrics are totals, drain and restarts hold."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pipelined.v1 import text_pb2, text_pb2_grpc
from pipelined_server.config import ModelSpec, ServerConfig, parse_config
from pipelined_server.errors import ConfigError
from pipelined_server.workers import resolve_workers, usable_cores
from text_fixtures import tiny_text_dirs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces: the parent pid is the 2nd field after its closing ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _channel(target: str) -> grpc.Channel:
    # Each channel its own TCP connection (gRPC shares connections between identical channels of a process
    # by default): the kernel spreads connections, not calls, over SO_REUSEPORT listeners.
    return grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


def _classify(channel: grpc.Channel, n: int) -> None:
    stub = text_pb2_grpc.TextServiceStub(channel)
    for _ in range(n):
        stub.ClassifyText(
            text_pb2.ClassifyTextRequest(inputs=[text_pb2.TextPairInput(text="a short sentence")]), timeout=60
        )


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    # One server for the module (starting workers is the slow part): the tests run in order, the last one ends it.
    config = tmp_path_factory.mktemp("workers") / "server.yaml"
    source = tiny_text_dirs()["sequence"]
    config.write_text(
        "grace_period_s: 10\nworkers: 2\n"
        f"models:\n  - {{name: cls, task: text-classification, source: '{source}', default: true}}\n"
    )
    port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PIPELINED_WORKERS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelined_server.cli", "--config", str(config), "--host", "127.0.0.1"]
        + ["--port", str(port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while _metric_or_zero(metrics_port, "pipelined_model_ready") < 2:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the workers never became ready"
            time.sleep(0.2)
        yield process, target, metrics_port
    finally:
        if process.poll() is None:
            process.kill()
            for child in _children(process.pid):
                os.kill(child, signal.SIGKILL)


def _metric_or_zero(port: int, name: str) -> float:
    try:
        return _metric(port, name)
    except OSError:
        return 0.0


def test_every_worker_serves_and_metrics_count_them_all(two_workers: Any) -> None:
    process, target, metrics_port = two_workers
    workers = _children(process.pid)
    assert len(workers) == 2
    # model_ready sums over the live workers: how many serve the model.
    assert _metric(metrics_port, "pipelined_model_ready") == 2
    port = int(target.rsplit(":", 1)[1])
    channels = [_channel(target) for _ in range(16)]
    for channel in channels:  # 16 connections: all on one worker has probability 2 * 2**-16
        _classify(channel, 10)
    assert _metric(metrics_port, "pipelined_requests_total") == 160
    assert _metric(metrics_port, "pipelined_pipeline_items_total") == 160
    # Both workers took connections (and so served calls: every channel made 10). Counted from the
    # sockets, not from CPU time: the pipeline runs in each worker's model process, so a worker's own CPU
    # for 80 calls is tens of milliseconds, too close to noise to tell (CI saw 0.04 s).
    held = {pid: _sockets(pid, port, _ESTABLISHED) for pid in workers}
    assert all(held.values()) and sum(held.values()) == 16, held
    for channel in channels:
        channel.close()


_LISTEN, _ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp


def _sockets(pid: int, port: int, state: str) -> int:
    """How many TCP sockets in `state` on local `port` (any address) process `pid` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:  # gone
        return 0
    return sum(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on TCP `port`."""
    return _sockets(pid, port, _LISTEN) > 0


def test_a_dead_worker_is_replaced_and_sigterm_drains_all(two_workers: Any) -> None:
    process, target, metrics_port = two_workers
    port = int(target.rsplit(":", 1)[1])
    first, second = _children(process.pid)
    assert _listens(first, port) and _listens(second, port)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while first in _children(process.pid) or len(_children(process.pid)) < 2:
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.2)
    assert second in _children(process.pid)
    (replacement,) = set(_children(process.pid)) - {second}
    # The survivor serves throughout; the replacement loads and serves too.
    channel = _channel(target)
    _classify(channel, 3)
    # The replacement takes no connection while it loads (its sibling serves them): it listens only once
    # its model is ready. It binds after setting the ready metric, so listening with the metric below 2 is
    # a bind before the load. Its start (imports, load) takes seconds, so the loading phase is observed.
    loading_seen = 0
    while _metric(metrics_port, "pipelined_model_ready") < 2:
        listening = _listens(replacement, port)
        if _metric(metrics_port, "pipelined_model_ready") < 2:
            assert not listening, "the replacement worker listens before its model is loaded"
            loading_seen += 1
        assert time.monotonic() < deadline, "the replacement never loaded"
        time.sleep(0.05)
    assert loading_seen > 0
    while not _listens(replacement, port):
        assert time.monotonic() < deadline, "the replacement never listened"
        time.sleep(0.05)
    workers = _children(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived the supervisor"
    channel.close()


def test_a_worker_that_binds_once_loaded_exits_1_when_it_cannot_bind(tmp_path: Path) -> None:
    # The port is held by a socket without SO_REUSEPORT: the worker loads, fails to bind, and must exit
    # with an error for its supervisor to restart it, not sit there serving nothing.
    source = tiny_text_dirs()["sequence"]
    config = tmp_path / "server.yaml"
    config.write_text(f"models:\n  - {{name: cls, task: text-classification, source: '{source}'}}\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINED_")}
        done = subprocess.run(
            [sys.executable, "-m", "pipelined_server.cli", "--config", str(config), "--host", "127.0.0.1"]
            + ["--port", str(port), "--metrics-port", "0", "--workers", "1"],
            env={**env, "PIPELINED_WORKER_INDEX": "1", "PIPELINED_WORKER_BINDS_EARLY": "0"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "names no config key" not in done.stderr
    ready = done.stderr.index("model cls ready")
    failed = done.stderr.index(f"Failed to bind to address 127.0.0.1:{port}")
    assert ready < failed, done.stderr[-2000:]  # it loaded first, then tried to bind


def test_auto_workers_follow_the_cores_on_cpu_and_stay_one_on_a_gpu() -> None:
    cpu = ServerConfig(models=(ModelSpec(name="m", task="text-classification", source="x"),))
    assert resolve_workers(cpu) == max(1, usable_cores())
    two_threads = ServerConfig(torch_threads=2, models=cpu.models)
    assert resolve_workers(two_threads) == max(1, usable_cores() // 2)
    gpu = ServerConfig(models=(ModelSpec(name="m", task="text-classification", source="x", device="cuda:0"),))
    assert resolve_workers(gpu) == 1
    assert resolve_workers(ServerConfig(workers=3, models=gpu.models)) == 3


@pytest.mark.parametrize("value", [-1, "two", 1.5, True])
def test_workers_must_be_auto_or_a_count(value: Any) -> None:
    doc = {"workers": value, "models": [{"name": "m", "task": "text-classification", "source": "x"}]}
    with pytest.raises(ConfigError, match="workers"):
        parse_config(doc)


def test_workers_auto_in_a_file() -> None:
    doc = {"workers": "auto", "models": [{"name": "m", "task": "text-classification", "source": "x"}]}
    assert parse_config(doc).workers == 0


def test_a_worker_binds_before_loading_only_when_no_other_runs(tmp_path: Path) -> None:
    # Something must answer on the port (NOT_SERVING) while workers load: the first at start-up, and a
    # worker restarted after all of them died; a worker started beside a running one binds once loaded.
    import shutil
    from types import SimpleNamespace

    from pipelined_server.workers import Supervisor, _Worker

    spec = ModelSpec(name="cls", task="text-classification", source=str(tiny_text_dirs()["sequence"]))
    supervisor = Supervisor(ServerConfig(host="127.0.0.1", port=0, models=(spec,)), [], 3)
    try:

        def worker(index: int, running: bool) -> _Worker:
            process: Any = SimpleNamespace(poll=lambda: None if running else -9)
            return _Worker(index, process, 0.0)

        assert supervisor._alone(0)  # start-up: nothing runs yet
        supervisor._workers = {0: worker(0, True)}
        assert not supervisor._alone(1)
        supervisor._workers = {1: worker(1, False), 2: worker(2, True)}  # 1 died, 2 serves
        assert not supervisor._alone(1)
        supervisor._workers = {1: worker(1, False), 2: worker(2, False)}  # all died (2 not yet reaped)
        assert supervisor._alone(1)
    finally:
        shutil.rmtree(supervisor._metrics_dir, ignore_errors=True)
        shutil.rmtree(supervisor._siblings_dir, ignore_errors=True)
