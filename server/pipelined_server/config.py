"""Server configuration: model specs and limits, from YAML or TOML, `PIPELINED_...` environment variables
and command-line flags (in that order of precedence, lowest first), validated at start-up.

Every section is a pydantic model (sections.py): typed fields, unknown keys refused, and a bad value fails
fast with a ConfigError naming its key path (`models[1].replicas: ...`), so a typo never surfaces as a
runtime error on the first request. What only the machine can tell (does `cuda:3` exist here?) is checked
by `check_devices` when the server starts, not when a file is parsed, so that a GPU config can be checked
on a laptop.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .audio import AudioLimits
from .errors import ConfigError
from .images import ImageLimits
from .memory import device_key, parse_size
from .sections import Float, Int, Section, config_error, invalid

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9464
DEFAULT_ASR_MODEL = "whisper-tiny.en"
# Embedded text models served by default when their weight packages are installed.
DEFAULT_TEXT_MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")
# Environment variables named PIPELINED_<KEY> override the file; `__` separates nested keys and list
# indexes (PIPELINED_LIMITS__MAX_INPUTS_PER_REQUEST, PIPELINED_MODELS__0__REPLICAS), as in pydantic-settings.
ENV_PREFIX = "PIPELINED_"
# PIPELINED_ variables that are not config keys: the model cache, the client's default target, and what the
# supervisor gives each worker process: its index and whether it binds before loading (workers.py), the
# siblings' directory and count (streaming/relay.py).
_OTHER_ENV = {
    "PIPELINED_CACHE_DIR",
    "PIPELINED_TARGET",
    "PIPELINED_WORKER_INDEX",
    "PIPELINED_WORKER_BINDS_EARLY",
    "PIPELINED_SIBLINGS_DIR",
    "PIPELINED_WORKER_COUNT",
}

# pipelined's own per-request options (not transformers arguments) a model may default, per task.
POOLINGS = ("none", "mean", "cls")
REQUEST_DEFAULTS: dict[str, dict[str, tuple[type, ...]]] = {
    "feature-extraction": {"pooling": (str,), "normalize": (bool,)},
}
# Weight dtypes a model may load with (int8 and nf4 are quantizations: see ModelSpec.dtype).
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8", "nf4")
# Devices transformers places a pipeline on; "auto" means device_map="auto".
_DEVICE = re.compile(r"cpu|auto|mps|(cuda|xpu)(:\d+)?")
_DEVICES_HELP = "use cpu, cuda, cuda:N (e.g. cuda:0), mps, xpu, xpu:N, or auto (device_map='auto')"
# Keys that `limits` replaced: (section, old key, key in limits).
_RENAMED = (
    ("inputs", "max_batch_inputs", "max_inputs_per_request"),
    ("images", "max_inputs_per_request", "max_inputs_per_request"),
    ("inputs", "max_text_chars", "max_text_chars"),
)


class InputLimits(Section):
    """What one request may carry (the `limits` section); beyond it a request answers INVALID_ARGUMENT
    before any compute. Media have their own per-input bounds (`audio`, `images`)."""

    # Inputs in one request, of any kind: texts, images, clips, prompts, questions.
    max_inputs_per_request: Int = Field(default=256, ge=1)
    # Characters in one text input (a prompt, a chat message, a sentence to embed).
    max_text_chars: Int = Field(default=100_000, ge=1)
    # The work one request may ask for. Measured before these bounds (issue 10, 2-core CPU, whisper-tiny.en):
    # `chunk_length_s: 0.01` cost about 85 s of work per second of audio; one 16 MiB blob referenced 100
    # times by a generic call decoded to +1.6 GiB on the event loop.
    # Generation (every generating task, typed or generic): tokens per sequence, beams, sequences.
    max_new_tokens: Int = Field(default=1024, ge=1)
    max_num_beams: Int = Field(default=8, ge=1)
    max_num_return_sequences: Int = Field(default=8, ge=1)
    # A request's own `batch_size` (inputs the pipeline runs at once within the call).
    max_batch_size: Int = Field(default=64, ge=1)
    # Zero-shot labels per request: every label is one more forward pass per input.
    max_candidate_labels: Int = Field(default=64, ge=1)
    # Chunked ASR: each chunk is one forward pass (Whisper pads every chunk to 30 s), so tiny chunks, or
    # strides that leave little new audio per chunk (chunk_length - 2 * stride_length), multiply the work.
    min_chunk_length_s: Float = Field(default=1.0, gt=0)
    min_chunk_step_s: Float = Field(default=0.5, gt=0)
    # Generic calls: blob references (`$bytes`, `$image`, `$audio`, `$ndarray`) in inputs and parameters...
    max_blob_references: Int = Field(default=256, ge=1)
    # ...and the bytes they decode to, every reference counted (a pipeline converts each input).
    max_decoded_bytes_per_request: Int = Field(default=256 * 1024 * 1024, ge=1)
    # Decoded bytes held by all calls at once; beyond it a call answers RESOURCE_EXHAUSTED.
    max_decoded_bytes_in_flight: Int = Field(default=1024 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _budgets_in_order(self) -> InputLimits:
        if self.max_decoded_bytes_in_flight < self.max_decoded_bytes_per_request:
            raise invalid(
                "max_decoded_bytes_in_flight",
                f"{self.max_decoded_bytes_in_flight} must be >= max_decoded_bytes_per_request "
                f"({self.max_decoded_bytes_per_request})",
            )
        return self


class BatchingConfig(Section):
    """Dynamic batching limits of one model instance."""

    # Largest number of requests run through the pipeline in one call.
    max_batch_size: Int = Field(default=8, ge=1)
    # How long the oldest waiting request may wait for others to join its batch.
    max_queue_delay_ms: Float = Field(default=5.0, ge=0)
    # Requests waiting beyond this answer RESOURCE_EXHAUSTED at once, instead of piling up latency.
    max_queue_size: Int = Field(default=1024, ge=1)


class StreamingLimits(Section):
    """Bounds on live recognition streams (SpeechService.StreamingRecognize)."""

    # A stream that sends no message for this long ends with DEADLINE_EXCEEDED, freeing what it held.
    idle_timeout_s: Float = Field(default=30.0, gt=0)
    # Largest audio message; live audio comes in pieces of a few seconds at most.
    max_chunk_bytes: Int = Field(default=1024 * 1024, gt=0)
    # Streams open at once; one more is refused with RESOURCE_EXHAUSTED.
    max_streams: Int = Field(default=64, gt=0)
    # The decoded window of a long utterance is trimmed at a committed boundary once it is this long...
    # Short, because every re-decode and the final one generate tokens for the whole window (Whisper's
    # encoder costs the same for any window, padded to 30 s): on a 2-core CPU with whisper-tiny.en, 5 s
    # instead of 15 s cut the one-stream final lag from ~1.7 s to ~1.1 s (bench/asr_streaming.py), and
    # the transcript changed by one word in 250.
    max_window_s: Float = Field(default=5.0, gt=0)
    # ...and cut by force (its hypothesis made final) at this length, well under Whisper's 30 s window.
    hard_window_s: Float = Field(default=25.0, gt=0, le=30.0)
    # A stream that left `min_decode_interval` unset decodes again after this much new speech (instead of its
    # 1 s) while its model has a replica free and nothing queued: idle cores make results fresher. Such
    # decodes queue behind every other work and do not count in admission's measure of a stream's cost, so
    # a server under load decodes every 1 s as before. null: never. Measured (bench/asr_streaming.py,
    # tiny.en, 2 minutes, one run each), every decode at 0.5 s against 1 s: 1 stream final lag p50 0.95
    # against 1.08 s, p95 1.30 against 1.53 s; 4 streams p50 1.05 against 1.17 s, p95 1.43 against 1.59 s;
    # CPU per audio second 0.35 against 0.22.
    idle_decode_interval_s: Float | None = Field(default=0.5, gt=0)
    # Whisper decodes of a stream encode their window plus this much padding, not the 30 s window that
    # Whisper pads every input to (tasks/whisper_context.py: with less than 8 s, tiny.en was measured to
    # repeat itself at the cut on short windows). null: the full 30 s window.
    encoder_margin_s: Float | None = Field(default=8.0, ge=1.0)
    # Interim (re-)decodes of a Whisper stream stop before the first word heard in the last this-many
    # seconds of their window (AlignAtt, tasks/whisper_alignatt.py: it is not fully heard yet, and the
    # stop keeps Whisper from repeating itself at the cut), so they encode their window plus
    # `interim_encoder_margin_s` only: 0.36 s instead of 0.76 s per decode (median, tiny.en), for 4 more
    # missed words in 281. Final decodes keep `encoder_margin_s` and no stop. null: interims decode as finals.
    interim_alignatt_s: Float | None = Field(default=0.5, gt=0, le=2.0)
    interim_encoder_margin_s: Float = Field(default=1.0, ge=0.5)
    # Whisper re-decodes of a stream start with the words already final in their window, forced, so they
    # generate only the words after them (tasks/whisper_prefix.py). false: every decode generates the
    # whole window.
    force_committed_prefix: bool = True
    # A stream to a multilingual Whisper that gives no language has it detected once, from its first
    # seconds of speech, and keeps it: results report it, and later decodes neither detect it again nor
    # switch language (tasks/whisper_language.py). false: every decode detects its own.
    detect_language_once: bool = True
    # Audio sustained faster than this many times real time ends the stream with RESOURCE_EXHAUSTED...
    max_realtime_factor: Float = Field(default=3.0, gt=0)
    # ...beyond this much audio sent ahead at once (a client reconnecting may replay what it buffered).
    realtime_burst_s: Float = Field(default=30.0, ge=0)
    # Audio sustained slower than this fraction of real time, once `idle_timeout_s` behind, ends the
    # stream with DEADLINE_EXCEEDED: a trickle (a few samples just inside the idle timeout) would hold
    # its slot for ever. Only the time the server waits for the client's messages counts, less the time
    # spent decoding the stream's audio (a client may wait for results before sending more); a live
    # source, even with a drifting clock, is far above one half.
    min_realtime_factor: Float = Field(default=0.5, ge=0, lt=1)
    # Audio a stream may hold not yet final (the decoder fell this far behind): RESOURCE_EXHAUSTED.
    max_held_audio_s: Float = Field(default=60.0, gt=0)
    # A stream's audio beyond this length is not read: its finals so far are sent, then OUT_OF_RANGE.
    max_stream_duration_s: Float | None = Field(default=None, gt=0)
    # Streams open at once from one client address (streams still waiting for their config count).
    max_streams_per_peer: Int = Field(default=16, gt=0)
    # Responses waiting for a client that does not read them: interims are merged, finals kept up to
    # this many, then the stream ends with RESOURCE_EXHAUSTED (bounded memory per stream), which the
    # client receives once it reads on; one that reads nothing for `idle_timeout_s` more is dropped.
    max_unread_responses: Int = Field(default=64, gt=0)
    # A new stream is refused (RESOURCE_EXHAUSTED, retry hint) when the streams open on its model, with
    # it, would use more than this fraction of the model's replicas' time (measured from recent decodes).
    admission_max_utilization: Float = Field(default=0.85, gt=0)
    # Before a model serves, each worker decodes what one live stream submits (streaming/calibration.py),
    # so admission knows a stream's cost before the first stream: 4-7 s more start-up per worker for
    # whisper-tiny.en on a loaded 2-core machine. false: one stream per replica until streams have been measured.
    calibrate: bool = True

    @model_validator(mode="after")
    def _windows_in_order(self) -> StreamingLimits:
        if self.max_window_s >= self.hard_window_s:
            raise invalid(
                "max_window_s", f"{self.max_window_s} must be below hard_window_s ({self.hard_window_s})"
            )
        return self


class TLSConfig(Section):
    """Transport security of the gRPC port (and the metrics port). Empty: plaintext."""

    cert_file: str = ""
    key_file: str = ""
    # Set: every client must present a certificate signed by this CA (mutual TLS).
    client_ca_file: str = ""

    @model_validator(mode="after")
    def _files_in_pairs(self) -> TLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise invalid("key_file" if self.cert_file else "cert_file", "cert_file and key_file go together")
        if self.client_ca_file and not self.cert_file:
            raise invalid("client_ca_file", "mutual TLS needs cert_file and key_file too")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class AuthConfig(Section):
    """Bearer tokens (security.py): empty means no authentication."""

    # YAML: `tokens: [{name, token, models?}]`; re-read on SIGHUP.
    tokens_file: str = ""


class GrpcOptions(Section):
    """gRPC server channel options (gRPC's production guidance: keepalive enforcement, connection age)."""

    # The server pings a connection quiet for this long, and drops it when no answer comes within
    # keepalive_timeout_s: a client that vanished (a dead node, a NAT that forgot) frees its streams.
    keepalive_time_s: Float = Field(default=60.0, gt=0)
    keepalive_timeout_s: Float = Field(default=20.0, gt=0)
    # Clients pinging more often than this are told GOAWAY ("too_many_pings"); the SDK pings every 30 s.
    min_ping_interval_s: Float = Field(default=10.0, ge=0)
    # Whether clients may ping connections that have no call open (the SDK does, to notice dead servers).
    permit_keepalive_without_calls: bool = True
    # Connections are closed (GOAWAY, +-10 % jitter) after this long, so clients re-resolve and spread
    # over replicas added since they connected; 0: never.
    max_connection_age_s: Float = Field(default=300.0, ge=0)
    # Calls still open on an aged connection get this long to finish; 0: no limit (live streams may run
    # for hours; new calls already go to the new connection).
    max_connection_age_grace_s: Float = Field(default=0.0, ge=0)
    # A connection with no call for this long is closed; 0: never.
    max_connection_idle_s: Float = Field(default=600.0, ge=0)
    # Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Calls past it are
    # reset (REFUSED_STREAM), which gRPC clients report as UNAVAILABLE instead of queueing them: at 256,
    # 1,000 calls at once from one SDK client lost 291 that way. Above max_concurrent_rpcs, so that the
    # server-wide limit answers first, with RESOURCE_EXHAUSTED and a clear message.
    max_concurrent_streams: Int = Field(default=4096, ge=1)
    # Calls open at once on the whole server; one more answers RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: Int = Field(default=2048, ge=1)


class LoggingConfig(Section):
    """The access log: one line per call (logs.py), never user content."""

    access_log: bool = True
    # Health checks (grpc.health.v1) in the access log at INFO too; by default at DEBUG only: a load
    # balancer or kubelet probing every few seconds would fill the log with them.
    health_checks: bool = False
    # "text" or "json" (one JSON object per line, for log collectors).
    format: Literal["text", "json"] = "text"


# Tasks that may run in a model process (batching/model_process.py): their work items are plain batches or
# picklable calls, with inputs and outputs cheap to pickle. Speech recognition's streamed long files run their
# calls in the server process on its own copy (scheduler `here` calls); a live stream's decodes are batches.
PROCESS_TASKS = frozenset(
    {
        "automatic-speech-recognition",
        "text-classification",
        "token-classification",
        "feature-extraction",
        "fill-mask",
        "zero-shot-classification",
    }
)


class ModelSpec(Section):
    """One served model."""

    name: str = Field(min_length=1)
    task: str
    # "embedded:<name>", a local directory, or a Hub id.
    source: str = Field(min_length=1)
    # "cpu", "cuda", "cuda:1", "mps", or "auto" for device_map="auto" (accelerate splits the model over the
    # GPUs, then the CPU, then the offload folder, within max_memory).
    device: str = "cpu"
    # "auto", "float32", "float16", "bfloat16"; "int8": on CUDA 8-bit bitsandbytes, on CPU dynamic
    # quantization of the linear layers (loading.cpu_int8); "nf4": 4-bit bitsandbytes (CUDA only).
    dtype: str = "auto"
    # Memory budget per device ("cpu", "cuda:0", ...), in bytes once parsed ("2GiB", "500MB" in the file).
    # With device auto it bounds what accelerate puts on each device; with a fixed device (or devices) the
    # weights must fit it. A config whose models cannot fit is refused at start-up (memory.check_budgets).
    max_memory: dict[str, int] = {}
    # With device auto: where accelerate offloads the weights that do not fit max_memory (read back layer by
    # layer at each call: slow, but a model larger than RAM still serves).
    offload_folder: str = ""
    # One copy of the weights per device, each with `replicas` pipelines (e.g. [cuda:0, cuda:1]); replaces
    # `device`.
    devices: tuple[str, ...] = ()
    batching: BatchingConfig = BatchingConfig()
    # Pipelines sharing one copy of the weights, each on its own worker thread: on a CPU, one per core
    # (with torch_threads 1) is how concurrent requests use every core.
    replicas: Int = Field(default=1, ge=1)
    # Run each replica's pipeline in a process of its own, fed by the server process (batching/model_process.py):
    # gRPC and the model then use two cores even for a client with one connection, and replicas do not share
    # one GIL. `auto`: on for small CPU models of the tasks that support it, when the machine has a core to
    # spare (speech recognition: with 2 replicas or more).
    model_process: Literal["auto"] | bool = "auto"
    # Whisper on a CPU in float32: each decoding step's vocabulary projection in int8, its best candidates and
    # the special tokens (languages, timestamps) scored again in float32 (tasks/whisper_logits.py: greedy
    # decodes pick the same tokens; tiny.en's stream decodes take 0.76-0.78 of the time). false: float32.
    fast_vocab_projection: bool = True
    # Passed to transformers.pipeline(): they become the defaults of every call (e.g. num_beams).
    pipeline_kwargs: dict[str, Any] = {}
    # Whether requests that name no model for this task go here.
    default: bool = False
    # pipelined's own request options that a request leaves unset (not passed to transformers), e.g.
    # feature-extraction {"pooling": "mean", "normalize": True} for ready-to-use sentence embeddings.
    request_defaults: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _embedded_defaults(cls, data: Any) -> Any:
        """An embedded source brings its task and latency-friendly defaults; the file's keys win one by one."""
        if not isinstance(data, dict) or not str(data.get("source", "")).startswith("embedded:"):
            return data
        from .sources.embedded import EMBEDDED_MODELS

        name = str(data["source"]).split(":", 1)[1]
        if name not in EMBEDDED_MODELS:
            known = ", ".join(sorted(EMBEDDED_MODELS))
            raise invalid("source", f"unknown embedded model {name!r}; known: {known}")
        task, kwargs, request_defaults = _served_defaults(EMBEDDED_MODELS[name].task)
        data = dict(data)
        data.setdefault("task", task)
        given = data.get("pipeline_kwargs")
        data["pipeline_kwargs"] = {**kwargs, **given} if isinstance(given, dict) else given or kwargs
        data.setdefault("request_defaults", request_defaults)
        return data

    @field_validator("task")
    @classmethod
    def _pipeline_task(cls, task: str) -> str:
        from transformers.pipelines import SUPPORTED_TASKS

        if task not in SUPPORTED_TASKS:
            raise invalid("", f"{task!r} is not a pipeline task of this transformers version")
        return task

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        if not _DEVICE.fullmatch(device):
            raise invalid("", f"{device!r} is not a device: {_DEVICES_HELP}")
        return device

    @field_validator("dtype")
    @classmethod
    def _dtype_name(cls, dtype: str) -> str:
        if dtype not in DTYPES:
            raise invalid("", f"{dtype!r}: use {', '.join(DTYPES)}")
        return dtype

    @field_validator("max_memory", mode="before")
    @classmethod
    def _budgets(cls, budgets: Any) -> Any:
        """{device: size} with devices named as everywhere else (0 -> cuda:0) and sizes in bytes."""
        if not isinstance(budgets, dict) or not budgets:
            raise invalid("", "expected a mapping of device to size, e.g. {cpu: 2GiB, cuda:0: 10GiB}")
        parsed = {}
        for device, size in budgets.items():
            key = device_key(device)
            if not key:
                raise invalid(str(device), f"{device!r} is not a device (cpu, mps, cuda, cuda:N)")
            try:
                parsed[key] = parse_size(size)
            except ValueError as exc:
                raise invalid(str(device), str(exc)) from None
        return parsed

    @field_validator("devices", mode="before")
    @classmethod
    def _device_list(cls, devices: Any) -> Any:
        if not isinstance(devices, list | tuple) or not devices:
            raise invalid("", "expected a non-empty list such as [cuda:0, cuda:1]")
        return devices

    @model_validator(mode="after")
    def _process_supported(self) -> ModelSpec:
        if self.model_process is True:
            if self.task not in PROCESS_TASKS:
                supported = ", ".join(sorted(PROCESS_TASKS))
                raise invalid(
                    "model_process",
                    f"a model process serves only these tasks: {supported}; not {self.task!r}",
                )
            if self.device != "cpu" or self.devices:
                raise invalid("model_process", "a model process runs on the CPU only (device: cpu)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _device_or_devices(cls, data: Any) -> Any:
        if isinstance(data, dict) and "device" in data and "devices" in data:
            raise invalid("devices", "set device or devices, not both")
        return data

    @model_validator(mode="after")
    def _placement_agrees(self) -> ModelSpec:
        """device/devices, max_memory, offload_folder, replicas and dtype agree (errors name the key)."""
        placed = self.devices or (self.device,)
        for index, device in enumerate(self.devices):
            if device == "auto":
                raise invalid(f"devices[{index}]", "auto splits one copy over every device; use device: auto")
            if not _DEVICE.fullmatch(device):
                raise invalid(f"devices[{index}]", f"{device!r} is not a device: {_DEVICES_HELP}")
        gpus = [d for d in self.devices if d != "cpu"]
        if len(set(gpus)) != len(gpus):
            raise invalid("devices", "a GPU listed twice would hold two copies of the weights")
        if self.device == "auto" and self.replicas > 1:
            # accelerate's offload hooks load a module's weights before its forward and drop them after:
            # two threads in one split model would pull weights from under each other.
            raise invalid("replicas", "a model split by device auto runs one pipeline (replicas: 1)")
        if self.offload_folder and self.device != "auto":
            raise invalid("offload_folder", "only device auto offloads (accelerate's device_map)")
        if self.device != "auto":
            extra = sorted(set(self.max_memory) - {device_key(d) for d in placed})
            if extra:
                raise invalid("max_memory", f"{', '.join(extra)} is not where this model is placed")
        if self.dtype == "nf4" and not all(d == "auto" or d.startswith("cuda") for d in placed):
            raise invalid("dtype", "nf4 (4-bit bitsandbytes) runs on CUDA only: device cuda:N or auto")
        return self

    @model_validator(mode="after")
    def _request_defaults_of_the_task(self) -> ModelSpec:
        allowed = REQUEST_DEFAULTS.get(self.task, {})
        for key, value in self.request_defaults.items():
            at = f"request_defaults.{key}"
            if key not in allowed:
                names = ", ".join(sorted(allowed)) or "none"
                raise invalid(at, f"not an option of {self.task!r} (allowed: {names})")
            if not isinstance(value, allowed[key]):
                raise invalid(at, f"expected {allowed[key][0].__name__}, got {value!r}")
        pooling = self.request_defaults.get("pooling", "none")
        if pooling not in POOLINGS:
            raise invalid("request_defaults.pooling", f"{pooling!r}: use {', '.join(POOLINGS)}")
        if self.request_defaults.get("normalize") and pooling == "none":
            raise invalid("request_defaults.normalize", "needs pooling 'mean' or 'cls'")
        return self


class ServerConfig(Section):
    host: str = "[::]"
    port: Int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    # 0 disables the Prometheus endpoint.
    metrics_port: Int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535)
    # Seconds calls in flight get to finish after SIGTERM.
    grace_period_s: Float = Field(default=20.0, ge=0)
    # grpc.health.v1 alone, in plaintext, on this port too (0 picks a free one; unset: none), for
    # Kubernetes' native gRPC probes when the main port is TLS.
    health_port: Int | None = Field(default=None, ge=0, le=65535)
    # Largest gRPC message accepted, in bytes.
    max_message_bytes: Int = Field(default=64 * 1024 * 1024, gt=0)
    # torch intra-op threads; on small shared CPUs more threads than cores is much slower.
    torch_threads: Int = Field(default=1, ge=1)
    # Server processes on the port (SO_REUSEPORT, see workers.py): "auto" (0) is one per usable core when
    # every model is on the CPU, else one (a GPU holds the weights once; replicas share them in one process).
    workers: Int = Field(default=0, ge=0)
    # The event loop of each server process: "auto" is uvloop on Linux when it is installed (cli.py says why).
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    limits: InputLimits = InputLimits()
    audio: AudioLimits = AudioLimits()
    images: ImageLimits = ImageLimits()
    streaming: StreamingLimits = StreamingLimits()
    tls: TLSConfig = TLSConfig()
    auth: AuthConfig = AuthConfig()
    grpc: GrpcOptions = GrpcOptions()
    logging: LoggingConfig = LoggingConfig()
    models: tuple[ModelSpec, ...]

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: Any) -> Any:
        return 0 if value == "auto" else value

    @field_validator("models")
    @classmethod
    def _some_model(cls, models: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
        if not models:
            raise invalid("", "at least one model is required")
        return models

    @model_validator(mode="after")
    def _unique_names(self) -> ServerConfig:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise invalid("models", f"duplicate name(s) {', '.join(duplicates)}")
        return self

    def default_model(self, task: str) -> ModelSpec | None:
        candidates = [m for m in self.models if m.task == task]
        for spec in candidates:
            if spec.default:
                return spec
        return candidates[0] if candidates else None


def _served_defaults(task: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Task, pipeline kwargs and request defaults an embedded model of `task` is served with unless the
    file says otherwise."""
    if task == "automatic-speech-recognition":
        return (
            task,
            {"num_beams": 1},
            {},
        )  # greedy decoding favours latency; a request may still ask for beams
    if task == "text-generation":
        return task, {"do_sample": False}, {}
    if task == "feature-extraction":
        # Sentence-transformers models are trained for mean pooling and compared by cosine similarity.
        return task, {}, {"pooling": "mean", "normalize": True}
    return task, {}, {}


def embedded_spec(name: str) -> ModelSpec:
    """Spec of an embedded model served under its own name, with latency-friendly defaults."""
    return _validated(ModelSpec, {"name": name, "source": f"embedded:{name}"})


def default_document() -> dict[str, Any]:
    """What `pipelined-server` serves with no config: the embedded Whisper tiny.en, plus the embedded
    text models (MiniLM sentence embeddings, SmolLM2 chat) whose weight packages are installed."""
    from .sources.embedded import is_available

    names = [DEFAULT_ASR_MODEL, *(n for n in DEFAULT_TEXT_MODELS if is_available(n))]
    return {"models": [{"name": n, "source": f"embedded:{n}", "default": True} for n in names]}


def default_config() -> ServerConfig:
    return parse_config(default_document())


def parse_config(data: Any, origins: Mapping[str, str] | None = None) -> ServerConfig:
    """Validates a decoded config document; `origins` names the environment variables behind key paths."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(data).__name__}")
    data, renamed = _renamed_keys(data)
    return _validated(ServerConfig, data, {**renamed, **(origins or {})})


def _renamed_keys(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The keys that `limits` replaced still work, with a warning naming the new key; two of them set to
    different values are refused, since they are one limit now. Also returns new path -> old path, so
    that an error in a moved value names the key the file has."""
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        return data, {}  # pydantic reports the type
    data, limits = dict(data), dict(limits)
    set_by = {key: f"limits.{key}" for key in limits}
    for section, old, new in _RENAMED:
        if not isinstance(data.get(section), dict) or old not in data[section]:
            continue
        value = data[section][old]
        data[section] = {k: v for k, v in data[section].items() if k != old}
        if new in limits and limits[new] != value:
            raise ConfigError(
                f"{section}.{old}: renamed to limits.{new}; {set_by[new]} sets it to {limits[new]!r} and "
                f"{section}.{old} to {value!r}: keep only limits.{new}"
            )
        limits[new], set_by[new] = value, f"{section}.{old}"
        log.warning("config key %s.%s is deprecated: use limits.%s", section, old, new)
    # The rest of the old section moves too, so that its typos are reported beside the keys it allows.
    for key, value in (data.pop("inputs", None) or {}).items():
        limits[key], set_by[key] = value, f"inputs.{key}"
    if limits:
        data["limits"] = limits
    moved = {f"limits.{new}": by for new, by in set_by.items() if not by.startswith("limits.")}
    return data, moved


def _validated(model: type[Section], data: dict[str, Any], origins: Mapping[str, str] | None = None) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, model, origins) from None


def read_document(path: Path) -> dict[str, Any]:
    """The decoded mapping of a .yaml/.yml or .toml file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    kind = "TOML" if path.suffix == ".toml" else "YAML"
    try:
        data = tomllib.loads(text) if kind == "TOML" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(path: Path) -> ServerConfig:
    """A file's config, without environment overrides."""
    return parse_config(read_document(path))


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`data` with every PIPELINED_<KEY> variable applied, and the key path each one set (for errors).

    Values are strings, as the environment holds them; the fields' types convert them (`"6000"` -> 6000).
    A value starting with `[` or `{` is read as JSON (`PIPELINED_IMAGES__ALLOWED_URL_HOSTS='["cdn.example"]'`),
    and `null` is None: the way to turn off a setting whose file form is null (`encoder_margin_s: null`).
    """
    data, origins = _copy(data), {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in _OTHER_ENV:
            continue
        keys = variable[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in ServerConfig.model_fields:
            log.warning("%s names no config key; known: %s", variable, ", ".join(ServerConfig.model_fields))
            continue
        raw = environ[variable]
        if raw.lstrip()[:1] in ("[", "{"):
            try:
                value: Any = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{variable}: not valid JSON: {exc}") from None
        elif raw.strip() == "null":
            value = None
        else:
            value = raw
        path = _set(data, keys, value, variable)
        origins[path] = variable
    return data, origins


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _set(data: dict[str, Any], keys: list[str], value: Any, variable: str) -> str:
    """Sets data[k0][k1]... = value (an index where the container is a list); the key path it set."""
    container: Any = data
    path = ""
    for position, key in enumerate(keys):
        last = position == len(keys) - 1
        if isinstance(container, list):
            if not key.isdigit() or int(key) >= len(container):
                raise ConfigError(f"{variable}: {path} has {len(container)} entries; {key!r} is not an index")
            index: int | str = int(key)
            path += f"[{index}]"
        else:
            index = key
            path += f".{key}" if path else key
        if last:
            container[index] = value
        else:
            child = container.get(index) if isinstance(container, dict) else container[index]
            if not isinstance(child, dict | list):
                child = {}
                container[index] = child
            container = child
    return path


def resolve_config(
    path: Path | None, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> ServerConfig:
    """The config the server runs: the file (or the defaults), then PIPELINED_ variables, then `overrides`
    (the command-line flags, as top-level keys; `models` replaces the list)."""
    data = read_document(path) if path else default_document()
    if overrides and "models" in overrides:
        data["models"] = overrides["models"]
    data, origins = apply_env(data, environ)
    for key, value in (overrides or {}).items():
        if key == "models":
            continue
        # A section's flags (--tls-cert) set its keys; the file's other keys of that section stay.
        section = data.get(key)
        data[key] = {**section, **value} if isinstance(value, dict) and isinstance(section, dict) else value
    return parse_config(data, origins)


def check_files(config: ServerConfig) -> None:
    """Refuses, at start, TLS and token files this machine lacks (checked here rather than when the
    file is parsed, so that a config can be checked away from the server's secrets)."""
    named = {f"tls.{k}": getattr(config.tls, k) for k in ("cert_file", "key_file", "client_ca_file")}
    named["auth.tokens_file"] = config.auth.tokens_file
    missing = [
        f"{where}: no such file {path!r}"
        for where, path in named.items()
        if path and not Path(path).is_file()
    ]
    if missing:
        raise ConfigError("\n  ".join(missing))


def check_devices(config: ServerConfig) -> None:
    """Refuses, at start, a device this machine lacks (cuda without CUDA, cuda:3 with one GPU, mps off a
    Mac): the model would otherwise sit NOT_SERVING with a torch error in ListModels."""
    import torch

    problems = []
    for index, spec in enumerate(config.models):
        placed = {f"devices[{i}]": d for i, d in enumerate(spec.devices)} or {"device": spec.device}
        placed |= {f"max_memory.{d}": d for d in spec.max_memory}
        for key, device in placed.items():
            missing = _missing_device(torch, device)
            if missing:
                problems.append(f"models[{index}].{key}: {device!r} {missing}")
    if problems:
        raise ConfigError("\n  ".join(problems))


def _missing_device(torch: Any, device: str) -> str:
    """Why `device` is not on this machine, or '' when it is."""
    kind, _, number = device.partition(":")
    if kind in ("cpu", "auto"):
        return ""
    if kind == "mps":
        return "" if torch.backends.mps.is_available() else "but MPS (Apple GPU) is not available here"
    backend = getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        built = f"torch {torch.__version__}"
        return f"but no {kind.upper()} device is available here ({built}); use cpu or a machine with one"
    count = backend.device_count()
    if number and int(number) >= count:
        return f"but this machine has {count} {kind.upper()} device(s): {kind}:0 to {kind}:{count - 1}"
    return ""
