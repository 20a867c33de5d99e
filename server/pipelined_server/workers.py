"""Several server processes on one port: every core serves, and one `pipelined-server` command starts them.

Why processes: one Python process runs gRPC, the proto conversions and the pipeline's own Python under one
GIL, so a server process tops out at about one core however many replicas it has (measured on the peers'
tiny text classifier, 2 cores: the server process used ~1.0 core at c=32 while the other sat idle). Each
worker here is a complete server (its models, schedulers, health service) bound to the same port with
SO_REUSEPORT, the pattern gRPC recommends for Python; the kernel spreads *connections* over the workers,
so the load spreads when several clients (or one client with several channels) connect.

The supervisor itself loads no model and serves no RPC. It:
- resolves `workers` (`auto`: one per usable core on CPU-only configs; one on a GPU, whose memory should
  hold the weights once: replicas share them inside one process instead);
- gives every worker the same resolved port (a configured port 0 is resolved here first);
- collects Prometheus metrics from every worker (prometheus-client's multiprocess mode, one directory per
  supervisor) and serves them on the metrics port, so counters are totals over the workers;
- forwards SIGTERM/SIGINT (drain: each worker goes NOT_SERVING, finishes its calls within the grace) and
  SIGHUP, exits 0 once every worker exited 0; a second SIGTERM kills the workers at once;
- restarts a worker that dies while serving (with backoff), so one crashed process does not halve capacity;
- lets a worker bind before its models load only when no other worker runs (`binds_early`);
- makes the private directory where workers publish their live-stream headroom and listen for the streams
  a sibling could not admit (streaming/relay.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ServerConfig
from .streaming import relay

log = logging.getLogger(__name__)

# The worker index (0-based) and the flag that a process is a worker, not a supervisor.
WORKER_ENV = "PIPELINED_WORKER_INDEX"
# "1" for a worker that binds the port before its models load (see `binds_early`).
BINDS_EARLY_ENV = "PIPELINED_WORKER_BINDS_EARLY"
# A worker that dies sooner than this after its start counts as a crash loop, and is restarted more slowly.
_QUICK_DEATH_S = 10.0
_MAX_BACKOFF_S = 30.0


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(config: ServerConfig) -> int:
    """The number of server processes: `workers` when set, else one per usable core for CPU-only models
    (each with `torch_threads` threads), else one."""
    if config.workers:
        return config.workers
    if any(not str(spec.device).startswith("cpu") for spec in config.models):
        return 1
    return max(1, usable_cores() // max(1, config.torch_threads))


def resolve_port(host: str, port: int) -> int:
    """A configured port, or for port 0 a free one, chosen once so that every worker binds the same."""
    if port:
        return port
    bind_host = host.strip("[]") or "::"
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((bind_host, 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (0 when it is gone), from /proc."""
    return proc_bytes(pid, "status", "VmRSS")


def proc_bytes(pid: int, file: str, key: str) -> int:
    """A size in kB that /proc/PID/FILE gives as `KEY: N kB`, in bytes (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    started: float


class Supervisor:
    """Starts `count` workers running `argv` (the supervisor's own flags, forced to one process)."""

    def __init__(self, config: ServerConfig, argv: Sequence[str], count: int) -> None:
        self.config = config
        self.count = count
        self.port = resolve_port(config.host, config.port)
        self._argv = [*argv, "--workers", "1", "--port", str(self.port), "--metrics-port", "0"]
        self._metrics_dir = tempfile.mkdtemp(prefix="pipelined-metrics-")
        # mkdtemp's mode is 0700: only the server's user reaches the workers' relay sockets.
        self._siblings_dir = tempfile.mkdtemp(prefix="pipelined-workers-")
        self._workers: dict[int, _Worker] = {}
        self._stopping = threading.Event()
        self._kill = threading.Event()
        self._restarts: dict[int, int] = {}

    def _alone(self, index: int) -> bool:
        """Whether no other worker is running: then worker `index` binds before loading (`binds_early`), so
        that something answers on the port (NOT_SERVING) while it loads: the first worker at start, or a
        worker restarted after all of them died."""
        return all(w.process.poll() is not None for i, w in self._workers.items() if i != index)

    def _spawn(self, index: int) -> _Worker:
        env = {
            **os.environ,
            WORKER_ENV: str(index),
            BINDS_EARLY_ENV: "1" if self._alone(index) else "0",
            # Read by prometheus-client at import: each worker writes its samples to files in this directory.
            "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir,
            relay.DIR_ENV: self._siblings_dir,
            relay.COUNT_ENV: str(self.count),
        }
        cmd = [sys.executable, "-m", "pipelined_server.cli", *self._argv]
        # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which drains the workers once
        # (two signals would make a worker skip its drain). A worker whose supervisor dies drains by itself
        # (watch_parent), so none is left holding the port.
        process = subprocess.Popen(cmd, env=env, process_group=0)
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Worker(index, process, time.monotonic())

    def _serve_metrics(self) -> None:
        if not self.config.metrics_port:
            return
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)
        tls = self.config.tls  # HTTPS with the server's certificate, as with one process (cli.serve)
        start_http_server(
            self.config.metrics_port,
            addr=self.config.host.strip("[]") or "::",
            registry=registry,
            certfile=tls.cert_file or None,
            keyfile=tls.key_file or None,
        )

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            for worker in list(self._workers.values()):
                worker.process.send_signal(signal.SIGHUP)
            return
        if self._stopping.is_set():
            # A second SIGTERM/SIGINT: the operator does not want to wait for the drain.
            self._kill.set()
            for worker in list(self._workers.values()):
                worker.process.kill()
            return
        self._stopping.set()
        log.info("draining %d workers (grace %.0f s)", len(self._workers), self.config.grace_period_s)
        for worker in list(self._workers.values()):
            worker.process.send_signal(signal.SIGTERM)

    def _report_memory(self) -> None:
        """Logs each worker's resident memory once the workers have loaded (their total stops growing), so the
        cost of every extra worker is visible to the operator: each is a full copy of the models."""
        deadline = time.monotonic() + 600
        previous = -1
        while time.monotonic() < deadline and not self._stopping.wait(5):
            total = sum(rss_bytes(w.process.pid) for w in list(self._workers.values()))
            if abs(total - previous) < 0.02 * total:
                break
            previous = total
        if self._stopping.is_set():
            return
        sizes = {w.index: rss_bytes(w.process.pid) for w in list(self._workers.values())}
        log.info(
            "worker resident memory: %s",
            ", ".join(f"#{i} {b / 2**20:.0f} MiB" for i, b in sorted(sizes.items())),
        )

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self._serve_metrics()
            for index in range(self.count):
                self._workers[index] = self._spawn(index)
            print(
                f"pipelined-server listening on {self.config.host}:{self.port} ({self.count} workers)",
                flush=True,
            )
            threading.Thread(target=self._report_memory, daemon=True, name="memory-report").start()
            return self._watch()
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            shutil.rmtree(self._siblings_dir, ignore_errors=True)

    def _watch(self) -> int:
        from prometheus_client import multiprocess

        exit_codes: dict[int, int] = {}
        # The drain bound: the grace, plus time for a worker to stop its server and exit.
        hard_deadline: float | None = None
        while self._workers:
            if self._stopping.is_set() and hard_deadline is None:
                hard_deadline = time.monotonic() + self.config.grace_period_s + 10
            if hard_deadline is not None and time.monotonic() > hard_deadline:
                log.warning(
                    "workers still running %.0f s after SIGTERM; killing them", self.config.grace_period_s
                )
                for worker in self._workers.values():
                    worker.process.kill()
                hard_deadline = float("inf")
            for index, worker in list(self._workers.items()):
                code = worker.process.poll()
                if code is None:
                    continue
                multiprocess.mark_process_dead(worker.process.pid, self._metrics_dir)
                relay.forget(self._siblings_dir, index)  # no sibling relays a stream to a dead worker
                del self._workers[index]
                if self._stopping.is_set():
                    exit_codes[index] = code
                    continue
                self._restart(index, worker, code)
            time.sleep(0.2)
        if self._kill.is_set():
            return 1
        failed = {i: c for i, c in exit_codes.items() if c != 0}
        if failed:
            log.error("workers exited with errors: %s", failed)
            return 1
        return 0

    def _restart(self, index: int, worker: _Worker, code: int) -> None:
        quick = time.monotonic() - worker.started < _QUICK_DEATH_S
        self._restarts[index] = self._restarts.get(index, 0) + 1 if quick else 0
        backoff = min(_MAX_BACKOFF_S, 2.0 ** self._restarts[index]) if quick else 0.0
        log.error(
            "worker %d (pid %d) exited with %d; restarting in %.0f s",
            index,
            worker.process.pid,
            code,
            backoff,
        )
        if self._stopping.wait(backoff):
            return
        self._workers[index] = self._spawn(index)


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def binds_early() -> bool:
    """Whether this server binds its port before its models load, answering health (NOT_SERVING) and
    UNAVAILABLE meanwhile: one process alone does, so that probes see it starting; of several workers only
    one started while no other ran (the first at start-up, or a restart after all died). The others, and a
    worker restarted while its siblings serve, bind once loaded (App.start says why)."""
    return not is_worker() or os.environ.get(BINDS_EARLY_ENV) == "1"


def worker_index() -> int:
    return int(os.environ.get(WORKER_ENV, "0"))


async def watch_parent(stop: asyncio.Event) -> None:
    """In a worker: drains when the supervisor is gone (killed with SIGKILL, say), as a SIGTERM would."""
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("supervisor (pid %d) is gone; draining", parent)
            stop.set()
            return
        await asyncio.sleep(1)
