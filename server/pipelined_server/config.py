"""Server configuration: model specs and limits, loaded from YAML or TOML and validated at start-up.

A bad file fails fast with a ConfigError naming the offending field, so a typo never surfaces as a
runtime error on the first request.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .audio import AudioLimits
from .errors import ConfigError
from .images import ImageLimits

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9464
DEFAULT_ASR_MODEL = "whisper-tiny.en"
# Embedded text models served by default when their weight packages are installed.
DEFAULT_TEXT_MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")

# pipelined's own per-request options (not transformers arguments) a model may default, per task.
POOLINGS = ("none", "mean", "cls")
REQUEST_DEFAULTS: dict[str, dict[str, tuple[type, ...]]] = {
    "feature-extraction": {"pooling": (str,), "normalize": (bool,)},
}


@dataclass(frozen=True)
class InputLimits:
    """Size limits of text inputs; requests beyond them answer INVALID_ARGUMENT before any compute."""

    # Characters in one text input (a prompt, a chat message, a sentence to embed).
    max_text_chars: int = 100_000
    # Inputs in one request (the length of a request's `inputs` list).
    max_batch_inputs: int = 256


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching limits of one model instance."""

    # Largest number of requests run through the pipeline in one call.
    max_batch_size: int = 8
    # How long the oldest waiting request may wait for others to join its batch.
    max_queue_delay_ms: float = 5.0
    # Requests waiting beyond this answer RESOURCE_EXHAUSTED at once, instead of piling up latency.
    max_queue_size: int = 1024


@dataclass(frozen=True)
class StreamingLimits:
    """Bounds on live recognition streams (SpeechService.StreamingRecognize)."""

    # A stream that sends no message for this long ends with DEADLINE_EXCEEDED, freeing what it held.
    idle_timeout_s: float = 30.0
    # Largest audio message; live audio comes in pieces of a few seconds at most.
    max_chunk_bytes: int = 1024 * 1024
    # Streams open at once; one more is refused with RESOURCE_EXHAUSTED.
    max_streams: int = 64
    # The decoded window of a long utterance is trimmed at a committed boundary once it is this long...
    # Short, because every re-decode and the final one generate tokens for the whole window (Whisper's
    # encoder costs the same for any window, padded to 30 s): on a 2-core CPU with whisper-tiny.en, 5 s
    # instead of 15 s cut the one-stream final lag from ~1.7 s to ~1.1 s (bench/asr_streaming.py), and
    # the transcript changed by one word in 250.
    max_window_s: float = 5.0
    # ...and cut by force (its hypothesis made final) at this length, well under Whisper's 30 s window.
    hard_window_s: float = 25.0

    def __post_init__(self) -> None:
        """Reject limits no stream could live with, so a bad config fails at start-up."""
        if self.idle_timeout_s <= 0 or self.max_chunk_bytes <= 0 or self.max_streams <= 0:
            raise ValueError(f"streaming limits must be positive: {self}")
        if not 0 < self.max_window_s < self.hard_window_s <= 30.0:
            raise ValueError(f"streaming limits need 0 < max_window_s < hard_window_s <= 30: {self}")


@dataclass(frozen=True)
class TLSConfig:
    """Transport security of the gRPC port (and the metrics port). Empty: plaintext."""

    cert_file: str = ""
    key_file: str = ""
    # Set: every client must present a certificate signed by this CA (mutual TLS).
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class AuthConfig:
    """Bearer tokens (security.py): empty means no authentication."""

    # YAML: `tokens: [{name, token, models?}]`; re-read on SIGHUP.
    tokens_file: str = ""


@dataclass(frozen=True)
class GrpcOptions:
    """gRPC server channel options (gRPC's production guidance: keepalive enforcement, connection age)."""

    # The server pings a connection quiet for this long, and drops it when no answer comes within
    # keepalive_timeout_s: a client that vanished (a dead node, a NAT that forgot) frees its streams.
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Clients pinging more often than this are told GOAWAY ("too_many_pings"); the SDK pings every 30 s.
    min_ping_interval_s: float = 10.0
    # Whether clients may ping connections that have no call open (the SDK does, to notice dead servers).
    permit_keepalive_without_calls: bool = True
    # Connections are closed (GOAWAY, +-10 % jitter) after this long, so clients re-resolve and spread
    # over replicas added since they connected; 0: never.
    max_connection_age_s: float = 300.0
    # Calls still open on an aged connection get this long to finish; 0: no limit (live streams may run
    # for hours; new calls already go to the new connection).
    max_connection_age_grace_s: float = 0.0
    # A connection with no call for this long is closed; 0: never.
    max_connection_idle_s: float = 600.0
    # Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    max_concurrent_streams: int = 256
    # Calls open at once on the whole server; one more answers RESOURCE_EXHAUSTED at once.
    max_concurrent_rpcs: int = 2048

    def __post_init__(self) -> None:
        durations = {k: v for k, v in vars(self).items() if k.endswith("_s")}
        negative = sorted(k for k, v in durations.items() if v < 0)
        if negative:
            raise ValueError(f"must be >= 0: {', '.join(negative)}")
        if self.keepalive_time_s <= 0 or self.keepalive_timeout_s <= 0:
            raise ValueError("keepalive_time_s and keepalive_timeout_s must be > 0")
        if self.max_concurrent_streams < 1 or self.max_concurrent_rpcs < 1:
            raise ValueError("max_concurrent_streams and max_concurrent_rpcs must be >= 1")


@dataclass(frozen=True)
class LoggingConfig:
    """The access log: one line per call (logs.py), never user content."""

    access_log: bool = True
    # "text" or "json" (one JSON object per line, for log collectors).
    format: str = "text"

    def __post_init__(self) -> None:
        if self.format not in ("text", "json"):
            raise ValueError(f"format {self.format!r}: use text or json")


@dataclass(frozen=True)
class ModelSpec:
    """One served model."""

    name: str
    task: str
    # "embedded:<name>", a local directory, or a Hub id.
    source: str
    # "cpu", "cuda", "cuda:1", "mps", or "auto" for device_map="auto".
    device: str = "cpu"
    # "auto", "float32", "float16", "bfloat16"; "int8" loads 8-bit with bitsandbytes.
    dtype: str = "auto"
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    # Pipelines sharing one copy of the weights, each on its own worker thread: on a CPU, one per core
    # (with torch_threads 1) is how concurrent requests use every core.
    replicas: int = 1
    # Passed to transformers.pipeline(): they become the defaults of every call (e.g. num_beams).
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict)
    # Whether requests that name no model for this task go here.
    default: bool = False
    # pipelined's own request options that a request leaves unset (not passed to transformers), e.g.
    # feature-extraction {"pooling": "mean", "normalize": True} for ready-to-use sentence embeddings.
    request_defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "[::]"
    port: int = DEFAULT_PORT
    # 0 disables the Prometheus endpoint.
    metrics_port: int = DEFAULT_METRICS_PORT
    # Seconds calls in flight get to finish after SIGTERM.
    grace_period_s: float = 20.0
    # Largest gRPC message accepted, in bytes.
    max_message_bytes: int = 64 * 1024 * 1024
    # torch intra-op threads; on small shared CPUs more threads than cores is much slower.
    torch_threads: int = 1
    audio: AudioLimits = field(default_factory=AudioLimits)
    images: ImageLimits = field(default_factory=ImageLimits)
    inputs: InputLimits = field(default_factory=InputLimits)
    streaming: StreamingLimits = field(default_factory=StreamingLimits)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    grpc: GrpcOptions = field(default_factory=GrpcOptions)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    models: tuple[ModelSpec, ...] = ()

    def default_model(self, task: str) -> ModelSpec | None:
        candidates = [m for m in self.models if m.task == task]
        for spec in candidates:
            if spec.default:
                return spec
        return candidates[0] if candidates else None


# Greedy decoding favours latency; a request may still ask for beams.
_EMBEDDED_ASR_KWARGS: dict[str, Any] = {"num_beams": 1}


def embedded_spec(name: str) -> ModelSpec:
    """Spec of an embedded model served under its own name, with latency-friendly defaults."""
    from .sources.embedded import EMBEDDED_MODELS

    if name not in EMBEDDED_MODELS:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ConfigError(f"unknown embedded model {name!r}; known: {known}")
    task = EMBEDDED_MODELS[name].task
    kwargs = dict(_EMBEDDED_ASR_KWARGS) if task == "automatic-speech-recognition" else {}
    request_defaults: dict[str, Any] = {}
    if task == "text-generation":
        kwargs = {"do_sample": False}
    if task == "feature-extraction":
        # Sentence-transformers models are trained for mean pooling and compared by cosine similarity.
        request_defaults = {"pooling": "mean", "normalize": True}
    return ModelSpec(
        name=name,
        task=task,
        source=f"embedded:{name}",
        pipeline_kwargs=kwargs,
        request_defaults=request_defaults,
    )


def default_config() -> ServerConfig:
    """What `pipelined-server` serves with no config: the embedded Whisper tiny.en, plus the embedded
    text models (MiniLM sentence embeddings, SmolLM2 chat) whose weight packages are installed."""
    from .sources.embedded import is_available

    text = tuple(replace(embedded_spec(n), default=True) for n in DEFAULT_TEXT_MODELS if is_available(n))
    return ServerConfig(models=(replace(embedded_spec(DEFAULT_ASR_MODEL), default=True), *text))


def _build(cls: type, data: Any, where: str) -> Any:
    """Builds a dataclass from a mapping, rejecting unknown keys with their path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    try:
        return cls(**data)
    except ValueError as exc:  # a dataclass's own validation (limits that admit nothing)
        raise ConfigError(f"{where}: {exc}") from exc


def _model_from_dict(data: Any, index: int) -> ModelSpec:
    where = f"models[{index}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping")
    data = dict(data)
    for required in ("name",):
        if not data.get(required):
            raise ConfigError(f"{where}.{required} is required")
    source = data.get("source")
    if not source:
        raise ConfigError(f"{where}.source is required ('embedded:<name>', a local directory or a Hub id)")
    if str(source).startswith("embedded:"):
        base = embedded_spec(str(source).split(":", 1)[1])
        data.setdefault("task", base.task)
        # The embedded defaults (greedy decoding...) stay unless the file overrides them one by one.
        data["pipeline_kwargs"] = {**base.pipeline_kwargs, **(data.get("pipeline_kwargs") or {})}
        data.setdefault("request_defaults", base.request_defaults)
    if not data.get("task"):
        raise ConfigError(f"{where}.task is required (a transformers pipeline task)")
    if "batching" in data:
        data["batching"] = _build(BatchingConfig, data["batching"], f"{where}.batching")
    spec: ModelSpec = _build(ModelSpec, data, where)
    _validate_model(spec, where)
    return spec


def _validate_model(spec: ModelSpec, where: str) -> None:
    from transformers.pipelines import SUPPORTED_TASKS

    if spec.task not in SUPPORTED_TASKS:
        raise ConfigError(f"{where}.task {spec.task!r} is not a pipeline task of this transformers version")
    if spec.batching.max_batch_size < 1:
        raise ConfigError(f"{where}.batching.max_batch_size must be >= 1")
    if spec.replicas < 1:
        raise ConfigError(f"{where}.replicas must be >= 1")
    if spec.batching.max_queue_size < 1:
        raise ConfigError(f"{where}.batching.max_queue_size must be >= 1")
    if spec.batching.max_queue_delay_ms < 0:
        raise ConfigError(f"{where}.batching.max_queue_delay_ms must be >= 0")
    if spec.dtype not in {"auto", "float32", "float16", "bfloat16", "int8"}:
        raise ConfigError(f"{where}.dtype {spec.dtype!r}: use auto, float32, float16, bfloat16 or int8")
    if not isinstance(spec.pipeline_kwargs, dict):
        raise ConfigError(f"{where}.pipeline_kwargs must be a mapping")
    _validate_request_defaults(spec, where)


def _validate_request_defaults(spec: ModelSpec, where: str) -> None:
    if not isinstance(spec.request_defaults, dict):
        raise ConfigError(f"{where}.request_defaults must be a mapping")
    allowed = REQUEST_DEFAULTS.get(spec.task, {})
    for key, value in spec.request_defaults.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(
                f"{where}.request_defaults.{key}: not an option of {spec.task!r} (allowed: {names})"
            )
        if not isinstance(value, allowed[key]):
            raise ConfigError(f"{where}.request_defaults.{key}: expected {allowed[key][0].__name__}")
    pooling = spec.request_defaults.get("pooling", "none")
    if pooling not in POOLINGS:
        raise ConfigError(f"{where}.request_defaults.pooling {pooling!r}: use {', '.join(POOLINGS)}")
    if spec.request_defaults.get("normalize") and pooling == "none":
        raise ConfigError(f"{where}.request_defaults.normalize needs pooling 'mean' or 'cls'")


def _validate_inputs(limits: InputLimits) -> None:
    if limits.max_text_chars < 1:
        raise ConfigError("inputs.max_text_chars must be >= 1")
    if limits.max_batch_inputs < 1:
        raise ConfigError("inputs.max_batch_inputs must be >= 1")


def parse_config(data: Any) -> ServerConfig:
    """Validates a decoded config document."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a mapping at the top level")
    data = dict(data)
    models_raw = data.pop("models", None)
    if not models_raw:
        raise ConfigError("models: at least one model is required")
    if not isinstance(models_raw, list):
        raise ConfigError("models: expected a list")
    models = tuple(_model_from_dict(m, i) for i, m in enumerate(models_raw))
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"models: duplicate name(s) {', '.join(duplicates)}")
    if "audio" in data:
        data["audio"] = _build(AudioLimits, data["audio"], "audio")
    if "images" in data:
        data["images"] = _build(ImageLimits, data["images"], "images")
    if "inputs" in data:
        data["inputs"] = _build(InputLimits, data["inputs"], "inputs")
        _validate_inputs(data["inputs"])
    if "streaming" in data:
        data["streaming"] = _build(StreamingLimits, data["streaming"], "streaming")
    for key, cls in (
        ("tls", TLSConfig),
        ("auth", AuthConfig),
        ("grpc", GrpcOptions),
        ("logging", LoggingConfig),
    ):
        if key in data:
            data[key] = _build(cls, data[key], key)
    config: ServerConfig = _build(ServerConfig, {**data, "models": models}, "config")
    validate_security(config)
    return config


def validate_security(config: ServerConfig) -> None:
    """TLS files named in pairs and readable, the tokens file readable: checked at start, by key path."""
    tls = config.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls: cert_file and key_file go together")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("tls.client_ca_file (mutual TLS) needs tls.cert_file and tls.key_file")
    named = {f"tls.{k}": getattr(tls, k) for k in ("cert_file", "key_file", "client_ca_file")}
    named["auth.tokens_file"] = config.auth.tokens_file
    for where, path in named.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"{where}: no such file {path!r}")


def load_config(path: Path) -> ServerConfig:
    """Reads a .yaml/.yml or .toml file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
    return parse_config(data)
