"""Shared pieces of the benchmarks: a server subprocess, the shared recordings, percentiles, tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The word error rate helper and the tiny-model builders live with the tests; benchmarks reuse them.
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
from paths import SHARED_DATA  # noqa: E402  (PIPELINED_SHARED_DATA points a worktree at it)
from paths import TRANSCRIBED_CLIPS as DEFAULT_CLIPS  # noqa: E402


def clips(names: Sequence[str] = DEFAULT_CLIPS) -> list[Path]:
    paths = [SHARED_DATA / n for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing recordings (../shared/data is needed for benchmarks): {missing}")
    return paths


def loaded_dtype(model: str, dtype: str | None) -> str:
    """The dtype an embedded `model` served with `--dtype dtype` (None: the default) loads on a CPU."""
    from pipelined_server.config import embedded_spec
    from pipelined_server.loading import dtype_on

    return dtype_on(embedded_spec(model).model_copy(update={"dtype": dtype or "auto"}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`pipelined-server` in its own process, so client threads and the server never share a GIL."""

    def __init__(
        self, args: Sequence[str], torch_threads: int = 1, workers: str = "1", metrics: bool = False
    ) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port() if metrics else 0
        cmd = [
            sys.executable,
            "-m",
            "pipelined_server.cli",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--torch-threads",
            str(torch_threads),
            "--log-level",
            "WARNING",
            "--workers",
            workers,
            *args,
        ]
        self.process = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def wait_ready(self, timeout: float = 600) -> None:
        from pipelined import Client, PipelinedError

        client = Client(self.target)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if client.health() == "SERVING":
                    return
            except PipelinedError:
                pass
            if self.process.poll() is not None:
                raise SystemExit("server exited during start-up")
            time.sleep(0.2)
        raise SystemExit("server not ready in time")

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on /metrics (totals over the workers); needs `metrics=True`."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=30).read().decode()
        return sum(
            float(line.rpartition(" ")[2])
            for line in body.splitlines()
            if line.partition(" ")[0].partition("{")[0] == name
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)

    def worker_pids(self) -> list[int]:
        """The serving processes: the server itself, or each worker under a supervisor (not the model
        processes and multiprocessing's helpers that a serving process starts)."""
        workers = [pid for pid in _children(self.process.pid) if b"pipelined_server.cli" in _cmdline(pid)]
        return workers or [self.process.pid]

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each serving process."""
        from pipelined_server.workers import rss_bytes

        return [round(rss_bytes(pid) / 2**20) for pid in self.worker_pids()]

    def worker_tree_pss_mib(self) -> list[float]:
        """Proportional memory of each serving process with everything it started (its model processes, the
        fork server they come from): pages they share (torch, transformers) are counted once, split."""
        return [round(sum(_pss(p) for p in [pid, *_descendants(pid)]) / 2**20) for pid in self.worker_pids()]


def _children(pid: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pid]


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _pss(pid: int) -> int:
    from pipelined_server.workers import proc_bytes

    return proc_bytes(pid, "smaps_rollup", "Pss")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def concurrent_pass(
    call: Callable[[Any], Any], payloads: list[Any], concurrency: int
) -> tuple[list[float], float]:
    """All payloads through `call` from `concurrency` threads; returns latencies and throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    indices = iter(range(len(payloads)))

    def worker() -> None:
        while True:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            latency = timed(lambda i=i: call(payloads[i]))
            with lock:
                latencies.append(latency)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(payloads) / (time.perf_counter() - started)
