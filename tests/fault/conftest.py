"""The fault suite's server: a real `pipelined-server` process (so its memory, children and signals can
be watched) on tiny models, and a health prober beside every probe."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from paths import REPO
from tiny_models import build_tiny_whisper
from tiny_text_models import build_tiny_bert, build_tiny_causal_lm

# Start-up (imports, loading four tiny models) on a loaded 2-core machine takes 10-30 s.
START_TIMEOUT_S = 180.0
GRACE_S = 2.0


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fault-models")
    return {
        "whisper": build_tiny_whisper(root / "whisper"),
        "nli": build_tiny_bert(root / "nli", "nli"),
        "encoder": build_tiny_bert(root / "encoder", "base"),
        "lm": build_tiny_causal_lm(root / "lm"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(tiny_dirs: dict[str, Path], metrics_port: int, only_asr: bool = False) -> dict[str, Any]:
    batching = {"max_batch_size": 8, "max_queue_delay_ms": 5}
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": metrics_port,
        "grace_period_s": GRACE_S,
        # One process: the probes watch its memory, its children (its model processes, started with the
        # models: no probe may add one or lose one) and its signals.
        "workers": 1,
        "models": [
            {
                "name": "tiny-whisper",
                "task": "automatic-speech-recognition",
                "source": str(tiny_dirs["whisper"]),
                "pipeline_kwargs": {"num_beams": 1},
                "batching": batching,
                "default": True,
            },
            {"name": "tiny-nli", "task": "zero-shot-classification", "source": str(tiny_dirs["nli"])},
            {"name": "tiny-encoder", "task": "feature-extraction", "source": str(tiny_dirs["encoder"])},
            {"name": "tiny-lm", "task": "text-generation", "source": str(tiny_dirs["lm"])},
        ],
    }
    if only_asr:  # faster to start, for the probes that need a server of their own
        config["models"] = config["models"][:1]
    return config


class ServerProcess:
    """`python -m pipelined_server.cli --config ...`: its address, its process tree, its metrics."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "server.yaml"
        path.write_text(yaml.safe_dump(config))
        self.metrics_port = int(config["metrics_port"])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "client"), str(REPO / "server"), env.get("PYTHONPATH", "")]
        )
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.log = (workdir / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelined_server.cli", "--config", str(path), "--log-level", "WARNING"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "pipelined-server listening on HOST:PORT"
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r}; see {workdir / 'server.log'}")
        self.target = line.rsplit(" ", 1)[1].strip()
        self.channel = grpc.insecure_channel(self.target)
        self._wait_serving()
        self.started_children = self.child_pids()

    def _wait_serving(self) -> None:
        """Health's Watch streams each change: the first SERVING ends the wait (models loaded)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=START_TIMEOUT_S):
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        """Resident memory of the server and every process it started."""
        root = psutil.Process(self.pid)
        procs = [root, *root.children(recursive=True)]
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total / 2**20

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)

    def child_pids(self) -> set[int]:
        return {child.pid for child in self.children()}

    def metric(self, name: str, **labels: str) -> float:
        from urllib.request import urlopen

        from prometheus_client.parser import text_string_to_metric_families

        text = urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def series(self) -> int:
        from urllib.request import urlopen

        text = urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(GRACE_S + 15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def start_server(tiny_dirs: dict[str, Path], workdir: Path, only_asr: bool = False) -> ServerProcess:
    return ServerProcess(server_config(tiny_dirs, _free_port(), only_asr), workdir)


@pytest.fixture(scope="session")
def server(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tiny_dirs, tmp_path_factory.mktemp("fault-server"))
    yield proc
    proc.stop()


class HealthProber:
    """Checks overall health every 100 ms from its own thread and channel; `latencies` are its answers' times
    while it ran (a stalled event loop shows here first), `worst_s` the slowest, `quantile(q)` a percentile."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._stop = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            started = time.monotonic()
            try:
                self._stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            except grpc.RpcError:
                self.failures += 1
            self.latencies.append(time.monotonic() - started)

    def __enter__(self) -> HealthProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._channel.close()

    @property
    def worst_s(self) -> float:
        return max(self.latencies, default=0.0)

    def quantile(self, q: float) -> float:
        """The latency that a fraction `q` of the checks took at most (nearest rank)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@pytest.fixture
def health(server: ServerProcess) -> Iterator[HealthProber]:
    with HealthProber(server.target) as prober:
        yield prober
