"""Unary text classification: pipelined (default config) against the in-process pipeline (and TorchServe).

Question: what does a gRPC round trip through pipelined cost against calling the same `transformers.pipeline`
in process, at concurrency 1 (latency) and 8 / 32 (throughput)? Uses the peers harness (../shared/peers, or
$PEERS): its tiny random BERT classifier, its closed-loop load generator (`loadgen.py`, protocol pipelined)
and its in-process baseline (`inproc_baseline.py`), all run with this project's venv. The pipelined server is
this tree's code with the model's defaults (no batching block). TorchServe (batched 8 / 5 ms) is added only
when `setup.sh` has built it in $PEERS (venv-torchserve); that build takes several minutes and is not done here.

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/unary_peers.py --duration 5 --repeats 3

Prints one row per server with medians over the repeats: c=1 p50 (ms), c=8 and c=32 req/s, and the
ratio of each to the in-process figure (single calls; for c=8/32 the in-process row is the same pipeline
called with lists of 8, batch_size 8, in items/s, i.e. the batched limit).
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
from pathlib import Path
from typing import Any

from common import REPO, ServerProcess, table

# $PEERS, else the nearest ../shared/peers above the checkout (a worktree may sit one level deeper).
HARNESS = Path(
    os.environ.get("PEERS")
    or next((p / "shared" / "peers" for p in REPO.parents if (p / "shared" / "peers").is_dir()), "peers")
)


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
        py = sys.executable
        rows: dict[str, list[dict[str, Any]]] = {"in-process": [], "pipelined (default config)": []}
        torchserve = HARNESS / "venv-torchserve" / "bin" / "torchserve"
        for _ in range(a.repeats):
            inproc = _run_json(
                [py, str(work / "inproc_baseline.py"), "--model", str(model), "--modes", "single,list8_bs8"]
                + ["--threads", "1", "--duration", str(a.duration), "--warmup", str(a.warmup)],
                work / "inproc.jsonl",
                env,
            )
            rows["in-process"].append({r.get("mode", r.get("label")): r for r in inproc})
            server = ServerProcess(["--config", str(config)])
            try:
                server.wait_ready()
                cmd = [py, str(work / "loadgen.py"), "--protocol", "pipelined", "--target", server.target]
                cmd += [
                    "--model",
                    "tiny-textcls",
                    "--concurrency",
                    a.concurrency,
                    "--duration",
                    str(a.duration),
                ]
                cmd += ["--warmup", str(a.warmup), "--server-pid", str(server.process.pid)]
                rows["pipelined (default config)"].append(
                    {r["concurrency"]: r for r in _run_json(cmd, work / "lg.jsonl", env)}
                )
            finally:
                server.stop()
        if torchserve.exists():
            print("TorchServe found in $PEERS; run $PEERS/run_all.sh STEPS=torchserve-batched for its row")
        else:
            print(f"TorchServe not built in {HARNESS} (run ../shared/peers/setup.sh, ~5+ min); row omitted")
        print(table_of(rows, [int(c) for c in a.concurrency.split(",")]))
        print(
            f"\nreproduce: PYTHONPATH=$PWD/client:$PWD/server {py} bench/unary_peers.py "
            + " ".join(sys.argv[1:])
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table_of(rows: dict[str, list[dict[Any, Any]]], concurrency: list[int]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    inproc = rows["in-process"]
    in_p50 = med([r["single"]["p50_ms"] for r in inproc if "single" in r])
    in_rps = med([r["single"]["items_per_s"] for r in inproc if "single" in r])
    in_batched = med([r["list8_bs8"]["items_per_s"] for r in inproc if "list8_bs8" in r])
    headers = ["server", "c=1 p50 ms", "x in-proc"]
    for c in concurrency[1:]:
        headers += [f"c={c} req/s", "x in-proc single", "x in-proc list8"]
    first: list[object] = ["in-process (single / list of 8, bs 8)", in_p50, 1.0]
    for _ in concurrency[1:]:
        first += [f"{in_rps:.0f} / {in_batched:.0f}", 1.0, 1.0]
    out = [first]
    for name, runs in rows.items():
        if name == "in-process":
            continue
        p50 = med([r[concurrency[0]]["p50_ms"] for r in runs])
        row: list[object] = [name, p50, p50 / in_p50]
        for c in concurrency[1:]:
            rps = med([r[c]["rps"] for r in runs])
            row += [f"{rps:.0f}", rps / in_rps, rps / in_batched]
        out.append(row)
    return table(headers, out)


if __name__ == "__main__":
    main()
