"""The served models: loads each onto its device off the event loop and tracks its lifecycle and health."""

from __future__ import annotations

import asyncio
import copy
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .batching import Scheduler, model_process
from .config import BatchingConfig, ModelSpec, ServerConfig
from .errors import ModelNotFound, ModelNotReady
from .loading import load_replicas, replicate, run_batch
from .memory import resident_bytes
from .metrics import Metrics
from .workers import rss_bytes, usable_cores

log = logging.getLogger(__name__)


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ModelInstance:
    spec: ModelSpec
    state: ModelState = ModelState.LOADING
    pipeline: Any = None
    scheduler: Scheduler | None = None
    error: str = ""
    load_seconds: float = 0.0
    device: str = ""
    dtype: str = ""
    is_default: bool = False
    # The batching its scheduler runs with: the spec's, or one request at a time (`batching_for`).
    batching: BatchingConfig | None = None
    # What it costs, measured once loaded: its weights' bytes per device (summed over the copies on its
    # devices; "disk" for offloaded weights), and the server process's RSS right after it loaded.
    weight_bytes: dict[str, int] = field(default_factory=dict)
    resident_bytes: int = 0
    # Module -> device of a model that accelerate split (device auto); the device of each copy (devices).
    placements: tuple[tuple[str, str], ...] = ()
    replica_devices: tuple[str, ...] = ()
    # A tokenizer copy for the event loop (token counts, batching keys): a Rust tokenizer mutates its
    # truncation state per call, so sharing one with a worker thread raises "Already borrowed".
    tokenizer: Any = None
    # The processes computing its batches, when it runs in model processes (batching/model_process.py).
    processes: list[model_process.ModelProcess] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def sampling_rate(self) -> int:
        extractor = getattr(self.pipeline, "feature_extractor", None)
        return int(getattr(extractor, "sampling_rate", 0) or 0)


def batching_for(spec: ModelSpec, dtype: str) -> BatchingConfig:
    """The spec's batching, unless the model's int8 arithmetic would let batchmates change each other's
    results: then one request per batch.

    Why: int8 activations are quantized with scales taken over the whole batch (torch's dynamic
    quantization: one scale per input tensor; bitsandbytes' LLM.int8: outlier columns chosen across the
    batch), so what else is in the batch changes a request's numbers. Measured with the embedded
    whisper-tiny.en in int8: the six shared clips in one batch of 6, against one by one, gave a different
    transcript for one of them (jfk: "...for you. Ask what..." against "...for you, ask what..."); in float32
    all six were equal. Batching must never change a result, a live stream's words included (their decodes
    share batches with other streams'). What it cost 4 live streams of 2 minutes (bench/asr_streaming.py,
    interleaved, two runs each): nothing measurable (final lag p95 1.599 and 1.579 s one at a time, 1.607
    and 1.651 s batched; CPU per audio second 0.231 and 0.222 against 0.235 and 0.234)."""
    if dtype == "int8" and spec.batching.max_batch_size > 1:
        return spec.batching.model_copy(update={"max_batch_size": 1})
    return spec.batching


# Called with (model name, serving?) whenever a model's readiness changes; feeds grpc.health.v1.
HealthCallback = Callable[[str, bool], None]
# Called with a model once its scheduler runs, before it is READY (SERVING): what must be measured first.
WarmUp = Callable[[ModelInstance], Awaitable[None]]


@dataclass
class Registry:
    config: ServerConfig
    metrics: Metrics
    on_health: HealthCallback = lambda name, ok: None
    instances: dict[str, ModelInstance] = field(default_factory=dict)
    # Run in order for every model that loaded (a live-stream calibration: services/speech.py).
    warm_ups: list[WarmUp] = field(default_factory=list)

    def __post_init__(self) -> None:
        defaults = {t: self.config.default_model(t) for t in {m.task for m in self.config.models}}
        for spec in self.config.models:
            self.instances[spec.name] = ModelInstance(spec=spec, is_default=defaults.get(spec.task) is spec)
            self.metrics.model_ready.labels(spec.name).set(0)

    async def load_all(self) -> None:
        """Loads models one after another (loading in parallel only fights over the same cores and disk)."""
        for instance in self.instances.values():
            await self._load(instance)

    async def _load(self, instance: ModelInstance) -> None:
        started = time.monotonic()
        try:
            copies = await asyncio.to_thread(load_replicas, instance.spec)
        except Exception as exc:  # a model that fails to load must not take the others down
            log.exception("model %s failed to load", instance.name)
            instance.state = ModelState.FAILED
            instance.error = f"cannot load {instance.spec.source!r}: {type(exc).__name__}: {exc}"
            self.on_health(instance.name, False)
            return
        instance.load_seconds = time.monotonic() - started
        loaded = copies[0]
        instance.pipeline = loaded.pipeline
        pipeline_tokenizer = getattr(loaded.pipeline, "tokenizer", None)
        instance.tokenizer = copy.deepcopy(pipeline_tokenizer) if pipeline_tokenizer is not None else None
        instance.device = ", ".join(dict.fromkeys(c.device for c in copies))
        instance.dtype = loaded.dtype
        instance.placements = loaded.placements
        instance.replica_devices = tuple(c.device for c in copies) if instance.spec.devices else ()
        for c in copies:
            for device, size in c.weight_bytes.items():
                instance.weight_bytes[device] = instance.weight_bytes.get(device, 0) + size
                self.metrics.weight_bytes.labels(instance.name, device).set(instance.weight_bytes[device])
        instance.resident_bytes = resident_bytes()
        self.metrics.resident_bytes_after_load.labels(instance.name).set(instance.resident_bytes)
        weights = sum(instance.weight_bytes.values())
        instance.batching = batching_for(instance.spec, loaded.dtype)
        if instance.batching is not instance.spec.batching:
            log.info("model %s: int8 requests are computed one at a time (see batching_for)", instance.name)
        if model_process.enabled(instance.spec, weights, usable_cores()):
            try:
                instance.processes = await asyncio.to_thread(self._start_processes, instance.spec)
            except Exception as exc:
                log.exception("model %s: its model processes failed to start", instance.name)
                instance.state = ModelState.FAILED
                instance.error = f"cannot start the model process of {instance.spec.source!r}: {exc}"
                self.on_health(instance.name, False)
                return
            instance.scheduler = Scheduler(
                instance.name,
                instance.processes,
                model_process.run_batch,
                instance.batching,
                self.metrics,
                run_call=model_process.run_call,
                # Calls that must run here (a long file's segments, handed to the event loop as they come)
                # run on the server's copy, one per process, sharing its weights.
                local_replicas=replicate(loaded.pipeline, len(instance.processes)),
                watch=model_process.watching,
            )
        else:
            replicas = [r for c in copies for r in replicate(c.pipeline, instance.spec.replicas)]
            instance.scheduler = Scheduler(
                instance.name, replicas, run_batch, instance.batching, self.metrics
            )
        instance.scheduler.start()
        for warm_up in self.warm_ups:
            try:
                await warm_up(instance)
            except Exception:  # the model serves without what the warm-up would have measured
                log.exception("model %s: warm-up failed", instance.name)
        instance.state = ModelState.READY
        self.metrics.load_seconds.labels(instance.name).set(instance.load_seconds)
        self.metrics.model_ready.labels(instance.name).set(1)
        log.info("model %s ready in %.1f s on %s", instance.name, instance.load_seconds, instance.device)
        self.on_health(instance.name, True)

    def _start_processes(self, spec: ModelSpec) -> list[model_process.ModelProcess]:
        """One model process per replica, started together and waited for (each imports torch and loads the
        pipeline: seconds)."""
        threads = self.config.torch_threads
        processes = [model_process.ModelProcess(spec, threads, i) for i in range(spec.replicas)]
        try:
            for process in processes:
                process.wait_ready()
        except Exception:
            for process in processes:
                process.close()
            raise
        sizes = ", ".join(f"{rss_bytes(p.pid or 0) / 2**20:.0f} MiB" for p in processes)
        log.info("model %s: %d model processes, resident memory %s", spec.name, len(processes), sizes)
        return processes

    def find(self, name: str) -> ModelInstance:
        instance = self.instances.get(name)
        if instance is None:
            known = ", ".join(self.instances) or "none"
            raise ModelNotFound(f"no model named {name!r} is served; served models: {known}")
        return instance

    def ready(self, name: str, task: str) -> ModelInstance:
        """The model a request asks for (or the task's default), ready to serve that task."""
        if not name:
            default = self.config.default_model(task)
            if default is None:
                raise ModelNotFound(f"no model is served for task {task!r}")
            name = default.name
        instance = self.find(name)
        if instance.spec.task != task:
            raise ModelNotFound(f"model {name!r} serves {instance.spec.task!r}, not {task!r}")
        if instance.state is ModelState.LOADING:
            raise ModelNotReady(f"model {name!r} is still loading; retry later")
        if instance.state is ModelState.FAILED:
            raise ModelNotReady(f"model {name!r} failed to load: {instance.error}")
        return instance

    @property
    def serving(self) -> bool:
        """Overall health: every model has finished loading and at least one serves. A model that failed
        is NOT_SERVING under its own name and shows its error in ListModels, but does not take the
        models that work out of rotation."""
        states = [i.state for i in self.instances.values()]
        return ModelState.LOADING not in states and ModelState.READY in states

    async def close(self) -> None:
        for instance in self.instances.values():
            if instance.scheduler is not None:
                await instance.scheduler.close()
            for process in instance.processes:
                # On the loop, not a thread: this also runs at interpreter exit, when no thread can start. A
                # child ends within milliseconds of reading EOF.
                process.close()
            self.metrics.model_ready.labels(instance.name).set(0)
