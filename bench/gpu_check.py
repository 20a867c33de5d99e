"""The whole GPU check in one go: load, parity, latency and memory per dtype, on a machine lent a GPU.

    python bench/gpu_check.py [--model whisper-tiny.en] [--dtypes float32 float16 bfloat16 int8 nf4] [--clips 6]

First the CPU path: the model in float32 on the CPU gives the reference transcripts and latency. Then on
cuda:0, per dtype: load time, weights on the GPU, peak GPU memory (torch.cuda.max_memory_allocated), median
latency per clip, word error rate on the shared recordings and the words that differ from the CPU's
transcripts. Then served parity through a real server: cuda:0 float16, and with two GPUs `devices:
[cuda:0, cuda:1]` and `device: auto` split across both, each result equal to the in-process pipeline
loaded the same way. int8 and nf4 need bitsandbytes (`pip install '.[gpu]'`).

Exit status: 0 every check passed; 1 a check failed (its row says which); 2 no CUDA GPU here (the CPU rows
are printed, no GPU check ran).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from typing import Any

from common import DEFAULT_CLIPS, clips, table

# A dtype passes when its transcripts are this close to the CPU float32 ones (tiny.en's int8 on CPU
# differs in ~3 % of the words, see tests/e2e/test_cpu_dtypes.py).
MAX_WORDS_DIFFERING = 0.06


def transcribe_all(pipe: Any, audio: list[Any]) -> tuple[list[str], float]:
    pipe({"raw": audio[0], "sampling_rate": 16000})  # warm-up (CUDA kernels, allocator)
    texts, latencies = [], []
    for a in audio:
        started = time.perf_counter()
        texts.append(pipe({"raw": a, "sampling_rate": 16000})["text"])
        latencies.append(time.perf_counter() - started)
    return texts, statistics.median(latencies)


def load_row(
    spec: Any, device: str, audio: list[Any], refs: list[str], base: list[str] | None
) -> tuple[list[object], list[str]]:
    """One dtype on one device: its table row and its transcripts."""
    import torch
    from pipelined_server.loading import load_pipeline
    from pipelined_server.memory import human
    from wer import wer

    on_gpu = device.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loaded = load_pipeline(spec, device)
    load_s = time.perf_counter() - started
    texts, latency = transcribe_all(loaded.pipeline, audio)
    peak = human(torch.cuda.max_memory_allocated()) if on_gpu else "-"
    error = wer(" ".join(refs), " ".join(texts))
    differ = wer(" ".join(base), " ".join(texts)) if base else 0.0
    ok = differ <= MAX_WORDS_DIFFERING
    weights = ", ".join(f"{d} {human(n)}" for d, n in loaded.weight_bytes.items())
    row = [device, spec.dtype, loaded.dtype, f"{load_s:.1f}", weights, peak, f"{latency * 1000:.0f}"]
    row += [f"{error:.1%}", f"{differ:.1%}", "ok" if ok else f"FAIL (> {MAX_WORDS_DIFFERING:.0%} differ)"]
    del loaded
    return row, texts


def served_row(name: str, spec: Any, audio: list[Any]) -> list[object]:
    """A real server with this spec: each clip's remote result equals the in-process pipeline's."""
    from harness import ServerThread
    from pipelined import Client
    from pipelined_server.config import ServerConfig
    from pipelined_server.loading import load_pipeline

    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
    try:
        info = Client(server.target).models()[0]
        if info["state"] != "ready":
            return [name, info["device"], "-", f"FAIL: {info['error'][:80]}"]
        local = load_pipeline(spec).pipeline
        remote = Client(server.target, timeout=300).pipeline("automatic-speech-recognition", model=spec.name)
        same = all(remote(a) == local({"raw": a, "sampling_rate": 16000}) for a in audio)
        placement = json.dumps(info["weight_bytes"]) + (
            f" map {set(info['device_map'].values())}" if info["device_map"] else ""
        )
        return [name, info["device"], placement, "ok" if same else "FAIL: remote differs from in-process"]
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16", "int8", "nf4"])
    parser.add_argument("--clips", type=int, default=len(DEFAULT_CLIPS))
    args = parser.parse_args()
    import torch
    from pipelined_server.audio import decode_encoded
    from pipelined_server.config import embedded_spec

    names = DEFAULT_CLIPS[: args.clips]
    audio = [decode_encoded(p.read_bytes(), 16000) for p in clips(names)]
    manifest = json.loads((clips(names[:1])[0].parents[1] / "manifest.json").read_text())
    refs = [next(e["reference"] for e in manifest if e["file"] == n) for n in names]
    spec = embedded_spec(args.model).model_copy(update={"dtype": "float32"})
    headers = [
        "device",
        "dtype",
        "loaded as",
        "load s",
        "weights",
        "GPU peak",
        "latency ms",
        "WER",
        "vs CPU",
        "check",
    ]
    cpu_row, base = load_row(spec, "cpu", audio, refs, None)
    rows = [cpu_row]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    command = f"python bench/gpu_check.py --model {args.model} --dtypes {' '.join(args.dtypes)} --clips {args.clips}"
    if gpus == 0:
        print(table(headers, rows))
        print(f"\ncommand: {command}")
        print(f"gpu_check: FAILED: no CUDA GPU here (torch {torch.__version__}, cuda {torch.version.cuda}): "
              "only the CPU path ran; run this on a machine lent a GPU", file=sys.stderr)  # fmt: skip
        return 2
    for dtype in args.dtypes:
        if dtype in ("int8", "nf4") and importlib.util.find_spec("bitsandbytes") is None:
            rows.append(
                ["cuda:0", dtype, "-", "-", "-", "-", "-", "-", "-", "FAIL: bitsandbytes not installed"]
            )
            continue
        try:
            rows.append(load_row(spec.model_copy(update={"dtype": dtype}), "cuda:0", audio, refs, base)[0])
        except Exception as exc:  # one dtype failing must not hide the others' rows
            rows.append(
                [
                    "cuda:0",
                    dtype,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    f"FAIL: {type(exc).__name__}: {exc}"[:90],
                ]
            )
    served = [("cuda:0 float16", spec.model_copy(update={"device": "cuda:0", "dtype": "float16"}))]
    if gpus >= 2:
        served.append(
            (
                "devices cuda:0, cuda:1",
                spec.model_copy(update={"devices": ("cuda:0", "cuda:1"), "dtype": "float16"}),
            )
        )
        budget = {"cuda:0": 20_000_000, "cuda:1": 10**10}  # tiny.en's ~150 MB cannot stay on cuda:0 alone
        served.append(
            ("auto across 2 GPUs", spec.model_copy(update={"device": "auto", "max_memory": budget}))
        )
    served_rows = [served_row(name, s, audio[:2]) for name, s in served]
    print(table(headers, rows))
    print()
    print(table(["served", "device", "weights per device", "parity"], served_rows))
    print(f"\ncommand: {command}  ({gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__})")
    failed = [r for r in rows + served_rows if str(r[-1]).startswith("FAIL")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
