"""Unary text classification: pipelined (default config) against TorchServe and the in-process pipeline.

Question: what does a gRPC round trip through pipelined cost against calling the same `transformers.pipeline`
in process, and against TorchServe, at concurrency 1 (latency) and 8 / 32 (throughput)? Uses the peers
harness ($PEERS, else ~/.cache/pipelined-peers once `bash ../shared/peers/setup.sh` has built it, else
../shared/peers): its tiny random BERT classifier, its closed-loop load generator (`loadgen.py`: one gRPC
channel, so one connection) and its in-process baseline (`inproc_baseline.py`). The pipelined server is this
tree's code with the model's defaults (no batching block, `workers: auto`, `model_process: auto`), and again
with the pipeline in the serving process (`model_process: false`). TorchServe batched (8 / 5 ms,
the peers' config) runs in the same repeat loop when setup.sh has built it; one torch thread everywhere.
The gRPC floor (`grpc_floor.py`: the same TextService answering a canned reply, no model, one process, one
event loop) runs there too: what Python gRPC alone costs at c=1 and carries at c=32 on this machine, with the
same load generator; and the same server with the bare pipeline call (`loading.run_batch`, one input per call)
on its event loop and in a model process: what a server that does gRPC and the call and nothing else costs,
so the distance from those rows to pipelined's is what pipelined itself adds per call at c=1 (they compute one
call at a time: at c=8 and c=32 they show what pipelined's batching brings).

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/unary_peers.py --duration 5 --repeats 3

Prints one row per server with medians over the repeats: c=1 p50 (ms), c=8 and c=32 req/s, the ratio of each
to the in-process figure (single calls; for c=8/32 also to the same pipeline called with lists of 8,
batch_size 8, in items/s: the batched limit) and to TorchServe, and each pipelined worker's resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import REPO, ServerProcess, free_port, table

# $PEERS, else the copy setup.sh builds, else the nearest ../shared/peers above the checkout (a worktree may
# sit one level deeper; that read-only copy has no TorchServe build).
_BUILT = Path.home() / ".cache" / "pipelined-peers"
HARNESS = Path(
    os.environ.get("PEERS")
    or (_BUILT if (_BUILT / "loadgen.py").exists() else None)
    or next((p / "shared" / "peers" for p in REPO.parents if (p / "shared" / "peers").is_dir()), "peers")
)
TORCHSERVE = "TorchServe batched (8 / 5 ms)"
PIPELINED = "pipelined (default config)"
IN_SERVER = "pipelined, model_process: false"
FLOOR = "gRPC floor (canned reply)"
BARE_LOOP = "gRPC + the pipeline call on the loop"
BARE_PROCESS = "gRPC + the pipeline call in a model process"


def _run_json(cmd: list[str], out: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    out.unlink(missing_ok=True)
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per concurrency")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument(
        "--profile", type=int, default=0, help="c=N: also sample the server with py-spy under this load"
    )
    ap.add_argument(
        "--quiet-wait", type=float, default=30.0, help="max s to wait for the machine to go idle per phase"
    )
    ap.add_argument(
        "--max-queue-delay-ms", type=float, default=None, help="override the default batching delay"
    )
    a = ap.parse_args()
    if not (HARNESS / "loadgen.py").exists():
        raise SystemExit(f"peers harness not found in {HARNESS} (set $PEERS)")
    work = Path(tempfile.mkdtemp(prefix="unary-peers-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        for name in ("loadgen.py", "cpuacct.py", "inproc_baseline.py", "make_models.py"):
            shutil.copy(HARNESS / name, work / name)
        model = HARNESS / "tiny-textcls"
        if not (model / "config.json").exists():
            subprocess.run([sys.executable, str(work / "make_models.py")], check=True, env=env)
            model = work / "tiny-textcls"
        config = work / "default.yaml"
        config.write_text(
            "models:\n"
            f"  - name: tiny-textcls\n    task: text-classification\n    source: {model}\n    default: true\n"
        )
        if a.max_queue_delay_ms is not None:
            with config.open("a") as f:
                f.write(f"    batching: {{max_queue_delay_ms: {a.max_queue_delay_ms}}}\n")
        # The same with the pipeline in the serving process: what the model process brings.
        in_server = work / "in_server.yaml"
        in_server.write_text(config.read_text() + "    model_process: false\n")
        py = sys.executable
        rows: dict[str, list[dict[str, Any]]] = {
            "in-process": [],
            FLOOR: [],
            BARE_PROCESS: [],
            PIPELINED: [],
            BARE_LOOP: [],
            IN_SERVER: [],
        }
        torchserve = HARNESS / "venv-torchserve" / "bin" / "torchserve"
        built = torchserve.exists() and (HARNESS / "torchserve" / "model_store" / "tiny-textcls.mar").exists()
        if built:
            rows[TORCHSERVE] = []
        else:
            print(f"TorchServe not built in {HARNESS} (run ../shared/peers/setup.sh, ~5+ min); row omitted")
        py = sys.executable
        load = ["--concurrency", a.concurrency, "--duration", str(a.duration), "--warmup", str(a.warmup)]
        load += ["--quiet-wait", str(a.quiet_wait)]
        memory: list[list[float]] = []
        profiled = ""
        for _ in range(a.repeats):
            inproc = _run_json(
                [py, str(work / "inproc_baseline.py"), "--model", str(model), "--modes", "single,list8_bs8"]
                + ["--threads", "1", "--duration", str(a.duration), "--warmup", str(a.warmup)]
                + ["--quiet-wait", str(a.quiet_wait)],
                work / "inproc.jsonl",
                env,
            )
            rows["in-process"].append({r.get("mode", r.get("label")): r for r in inproc})
            rows[FLOOR].append(_floor(load, work, env))
            rows[BARE_PROCESS].append(
                _floor(load, work, env, ["--model", str(model), "--placement", "process"])
            )
            rows[BARE_LOOP].append(_floor(load, work, env, ["--model", str(model), "--placement", "loop"]))
            for name, path in ((PIPELINED, config), (IN_SERVER, in_server)):
                server = ServerProcess(["--config", str(path)], workers="auto")
                try:
                    server.wait_ready()
                    cmd = [py, str(work / "loadgen.py"), "--protocol", "pipelined", "--target", server.target]
                    cmd += ["--model", "tiny-textcls", *load, "--server-pid", str(server.process.pid)]
                    rows[name].append({r["concurrency"]: r for r in _run_json(cmd, work / "lg.jsonl", env)})
                    if name == PIPELINED:
                        memory.append([*server.worker_rss_mib(), *server.worker_tree_pss_mib()])
                        if a.profile and not profiled:
                            profiled = _profile_under_load(a.profile, server, work, env)
                finally:
                    server.stop()
            if built:
                rows[TORCHSERVE].append(_torchserve(load, work, env))
        if profiled:
            print(profiled)
        half = len(memory[-1]) // 2
        print(
            f"pipelined workers (last repeat), MiB: resident {memory[-1][:half]}; proportional (PSS) with their "
            f"model processes and fork server {memory[-1][half:]}"
        )
        print(table_of(rows, [int(c) for c in a.concurrency.split(",")]))
        print(
            f"\nreproduce: PYTHONPATH=$PWD/client:$PWD/server {py} bench/unary_peers.py "
            + " ".join(sys.argv[1:])
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Where a server's busy samples go: the first frame, from the leaf up, that names one of these (so a coroutine of
# pipelined's running inside asyncio's Handle._run counts as pipelined's, and Handle._run's own time, which is
# gRPC's Cython code, as gRPC's; under uvloop the loop's own C code is there too). Idle samples (waiting in
# select/epoll or on a condition) are left out; the model process is answered on the event loop, with no thread
# waiting for it.
_IDLE = (
    "select (selectors.py",
    "Condition.wait",
    "Event.wait",
    "_worker (concurrent/futures/thread.py:8",
)
_CATEGORIES = (
    ("model forward (torch)", ("Module._call_impl",)),
    ("pipeline pre/postprocess", ("transformers/pipelines/",)),
    ("tokenizer", ("tokenization_utils",)),
    ("protobuf", ("google/protobuf/",)),
    ("access log (logging)", ("logging/__init__.py", "pipelined_server/logs.py")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("pipe to the model process", ("multiprocessing/", "pipelined_server/batching/model_process.py")),
    ("scheduler", ("pipelined_server/batching/",)),
    ("adapter + servicer", ("pipelined_server/services/", "pipelined_server/tasks/")),
    ("gRPC + event loop", ("asyncio/", "grpc/", "_poll_wrapper")),
)


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in _CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other Python"


def _profile_under_load(concurrency: int, server: ServerProcess, work: Path, env: dict[str, str]) -> str:
    """Loads the server at `concurrency` for 8 s while py-spy samples its serving process for 5 s."""
    cmd = [sys.executable, str(work / "loadgen.py"), "--protocol", "pipelined", "--target", server.target]
    cmd += ["--model", "tiny-textcls", "--concurrency", str(concurrency), "--duration", "8", "--warmup", "1"]
    load = subprocess.Popen([*cmd, "--quiet-wait", "0"], env=env, stdout=subprocess.DEVNULL)
    try:
        # The loadgen holds one connection, so one worker serves it: sample the one whose CPU time grows.
        pids = server.worker_pids()
        before = {pid: _cpu_seconds(pid) for pid in pids}
        time.sleep(1.5)
        busiest = max(pids, key=lambda pid: _cpu_seconds(pid) - before[pid])
        return f"c={concurrency}, pid {busiest}:\n" + profile(busiest, 5, work / "profile.txt")
    finally:
        load.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(pid: int, seconds: float, out: Path) -> str:
    """Samples the server with py-spy for `seconds` and says where its busy time goes."""
    py_spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(py_spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw"]
    subprocess.run([*cmd, "--threads", "-o", str(out)], check=True, capture_output=True)
    counts: dict[str, int] = {}
    busy = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) or idle in frames[-1] for idle in _IDLE):
            continue
        busy += int(n)
        category = _category(frames)
        counts[category] = counts.get(category, 0) + int(n)
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    return table(["where the server's busy samples go", "share"], [(k, f"{v / busy:.0%}") for k, v in rows])


def _floor(
    load: list[str], work: Path, env: dict[str, str], model: Sequence[str] = ()
) -> dict[int, dict[str, Any]]:
    """One run of the canned-reply server (grpc_floor.py; with `model`, its bare pipeline call) under the
    same load generator."""
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).with_name("grpc_floor.py")), "--port", str(port), *model]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if "listening" not in server.stdout.readline():
            raise SystemExit("grpc_floor.py did not start")
        lg = [
            sys.executable,
            str(work / "loadgen.py"),
            "--protocol",
            "pipelined",
            "--target",
            f"127.0.0.1:{port}",
        ]
        lg += ["--model", "tiny-textcls", *load, "--server-pid", str(server.pid)]
        return {r["concurrency"]: r for r in _run_json(lg, work / "floor.jsonl", env)}
    finally:
        server.terminate()
        server.wait(10)


def _torchserve(load: list[str], work: Path, env: dict[str, str]) -> dict[int, dict[str, Any]]:
    """One TorchServe run with the peers' own scripts (batched config, gRPC on 127.0.0.1:18183)."""
    ts_env = {**env, "PEERS": str(HARNESS), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pidfile = HARNESS / "run" / "torchserve.pid"
    try:
        subprocess.run(["bash", str(HARNESS / "start_torchserve.sh"), "batched"], check=True, env=ts_env)
        cmd = [str(HARNESS / "venv-loadgen" / "bin" / "python"), str(HARNESS / "loadgen.py")]
        cmd += ["--protocol", "torchserve", "--target", "127.0.0.1:18183", "--model", "tiny-textcls", *load]
        cmd += ["--server-pid", pidfile.read_text().strip()]
        return {r["concurrency"]: r for r in _run_json(cmd, work / "ts.jsonl", ts_env)}
    finally:
        subprocess.run(["bash", str(HARNESS / "stop_pidfile.sh"), str(pidfile)], env=ts_env, check=False)


def table_of(rows: dict[str, list[dict[Any, Any]]], concurrency: list[int]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    inproc = rows["in-process"]
    in_p50 = med([r["single"]["p50_ms"] for r in inproc if "single" in r])
    in_rps = med([r["single"]["items_per_s"] for r in inproc if "single" in r])
    in_batched = med([r["list8_bs8"]["items_per_s"] for r in inproc if "list8_bs8" in r])
    ts = rows.get(TORCHSERVE)
    ts_rps = {c: med([r[c]["rps"] for r in ts]) for c in concurrency[1:]} if ts else {}
    headers = ["server", "c=1 p50 ms", "- in-proc ms"]
    for c in concurrency[1:]:
        headers += [f"c={c} req/s", "x in-proc list8", "x TorchServe"]
    first: list[object] = ["in-process (single / list of 8, bs 8)", in_p50, 0.0]
    for _ in concurrency[1:]:
        first += [f"{in_rps:.0f} / {in_batched:.0f}", 1.0, "-"]
    out = [first]
    for name, runs in rows.items():
        if name == "in-process":
            continue
        p50 = med([r[concurrency[0]]["p50_ms"] for r in runs])
        row: list[object] = [name, p50, p50 - in_p50]
        for c in concurrency[1:]:
            rps = med([r[c]["rps"] for r in runs])
            row += [f"{rps:.0f}", rps / in_batched, rps / ts_rps[c] if ts_rps else "-"]
        out.append(row)
    lines = [table(headers, out)]
    runs = rows[PIPELINED]
    p50 = med([r[concurrency[0]]["p50_ms"] for r in runs])
    lines.append(f"target c=1 p50 <= in-process + 1.0 ms: {p50:.2f} vs {in_p50 + 1:.2f} ms")
    for c, want in ((8, 1.2), (32, 1.5)):
        if c in ts_rps:
            rps = med([r[c]["rps"] for r in runs])
            lines.append(f"target c={c} >= {want}x TorchServe: {rps / ts_rps[c]:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
