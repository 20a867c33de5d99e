"""Logging set-up and the access log: one line per call, with what an operator needs to follow a request
(method, model, status, latency, peer, request id, the token's name) and never what the caller sent.

The request id comes from the caller's `x-request-id` metadata (a proxy's or the client's own), or is
made here; either way it is returned in the trailing metadata, so a client can quote it in a bug report.

pipelined's own calls are logged by their servicers' wrapper (services/calls.py); `LoggedServices` logs
the rest: server reflection at INFO like any call, grpc.health.v1 at DEBUG unless `logging.health_checks`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

ACCESS = logging.getLogger("pipelined.access")
REQUEST_ID_KEY = "x-request-id"
# A caller's id is echoed and logged: short and plain, so it can neither forge log lines nor grow them.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# A quiet server's last lines reach the log within this long; WARNING and above are written at once.
FLUSH_EVERY_S = 0.5


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes lines in batches: at most one write per `FLUSH_EVERY_S` under load instead of one per record.

    Why: with one access log line per call, writing and flushing each line was 8% of a loaded server
    process's busy time (py-spy, peers' text classifier at c=32: StreamHandler.emit and its flush), on the
    event loop that also serves gRPC. WARNING and above, and the records logged at exit (`logging.shutdown`
    flushes every handler), are never held back."""

    def __init__(self, stream: Any = None, every_s: float = FLUSH_EVERY_S) -> None:
        super().__init__(stream)
        self.every_s = every_s
        self._pending: list[str] = []
        self._last_write = time.monotonic()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_periodically, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, record.levelno)

    def write_line(self, line: str, level: int) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            due = time.monotonic() - self._last_write >= self.every_s
        if level >= logging.WARNING or due:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._pending = self._pending, []
            self._last_write = time.monotonic()
            if lines:
                try:
                    self.stream.write(self.terminator.join(lines) + self.terminator)
                except Exception:  # a closed or broken stream must not take the server down
                    return
            super().flush()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()

    def _write_periodically(self) -> None:
        while not self._stopping.wait(self.every_s):
            if self._pending:
                self.flush()


def setup(level: str, fmt: str, access_log: bool = True) -> None:
    """Root logging: plain text lines, or one JSON object per line (`logging.format: json`)."""
    handler = BatchedStreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    ACCESS.setLevel(logging.INFO if access_log else logging.WARNING)
    for name, _ in EXPECTED_LIBRARY_WARNINGS:
        library = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedWarnings) for f in library.filters):
            library.addFilter(_ExpectedWarnings())


# Library warnings that describe what pipelined does on purpose, so an operator can do nothing about them:
# (logger, start of the message). Whisper's tokenizer warns of a decode whose last words have no ending
# timestamp "if audio is cut off in the middle of a word": every live-stream window ends where the audio
# received so far ends, and interim decodes stop before the last words on purpose (tasks/whisper_alignatt.py),
# so a 5-minute stream printed it hundreds of times (bench/asr_streaming.py).
EXPECTED_LIBRARY_WARNINGS = (
    ("transformers.models.whisper.tokenization_whisper", "Whisper did not predict an ending timestamp"),
)


class _ExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(
            record.name == name and str(record.msg).startswith(start)
            for name, start in EXPECTED_LIBRARY_WARNINGS
        )


class TextFormatter(logging.Formatter):
    """`2026-12-06 17:41:25,123 INFO logger: message` (local time)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = (-1, "")

    def access_line(self, created: float, level: int, text: str, fields: dict[str, Any]) -> str:
        """The line `format` gives an access log record, without making one (see `access`)."""
        second = int(created)
        if second != self._second[0]:
            self._second = (second, time.strftime(self.default_time_format, time.localtime(second)))
        msecs = int((created - second) * 1000)
        return f"{self._second[1]},{msecs:03d} {logging.getLevelName(level)} {ACCESS.name}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the access log's fields become top-level keys."""

    def access_line(self, created: float, level: int, text: str, fields: dict[str, Any]) -> str:
        """The line `format` gives an access log record, without making one (see `access`)."""
        msecs = int((created - int(created)) * 1000)
        return json.dumps({**_json_head(created, msecs, logging.getLevelName(level), ACCESS.name), **fields})

    def format(self, record: logging.LogRecord) -> str:
        entry = _json_head(record.created, record.msecs, record.levelname, record.name)
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _json_head(created: float, msecs: float, level: str, logger: str) -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z",
        "level": level,
        "logger": logger,
    }


def _direct_handler(level: int) -> Any:
    """The handler of `setup` when nothing else would see an access record (no other handler or filter on
    the way): then `access` hands it the formatted line directly. Making and dispatching a LogRecord was
    most of the access log's cost, 13% of a loaded server process's busy time (py-spy, peers' text
    classifier at c=32)."""
    if ACCESS.handlers or ACCESS.filters or not ACCESS.propagate or len(logging.root.handlers) != 1:
        return None
    handler = logging.root.handlers[0]
    if not isinstance(handler, BatchedStreamHandler) or handler.filters or level < handler.level:
        return None
    return handler if hasattr(handler.formatter, "access_line") else None


def request_id(metadata: Any) -> str:
    """The caller's `x-request-id` when it is a plain short token, else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def access(
    *,
    method: str,
    code: grpc.StatusCode,
    latency_s: float,
    peer: str,
    request_id: str,
    model: str = "",
    principal: str = "",
    level: int = logging.INFO,
) -> None:
    """Logs one finished call (logger `pipelined.access`)."""
    if not ACCESS.isEnabledFor(level):
        return
    fields = {
        "method": method,
        "model": model,
        "status": code.name,
        "latency_ms": round(latency_s * 1000, 1),
        "peer": peer,
        "request_id": request_id,
        "principal": principal,
    }
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v != "")
    handler = _direct_handler(level)
    if handler is not None:
        handler.write_line(handler.formatter.access_line(time.time(), level, text, fields), level)
        return
    ACCESS.log(level, text, extra={"access": fields})


HEALTH_SERVICE = "grpc.health.v1.Health"
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class LoggedServices:
    """Registers the services pipelined did not write (grpc.health.v1, server reflection) with the access log
    line and request id around each of their handlers: health checks at DEBUG unless `health_checks` (load
    balancers and kubelets probe every few seconds per instance: at INFO those lines would outnumber every
    other, which is why Kubernetes operators usually filter probes out of access logs), reflection at INFO.
    It stands in for the server in their `add_..._to_server` functions. pipelined's own calls are logged by
    their servicers' wrapper (services/calls.py).

    Why not a server interceptor: any interceptor puts every call, pipelined's included, through a chain of
    coroutines before its handler is found. A pass-through interceptor cost the canned-reply server
    (bench/grpc_floor.py) 0.04 ms of CPU per call at c=32 (0.42 against 0.38 ms, about 10%) and 0.1 ms of
    p50 at c=1. An authentication interceptor (security.py) still runs before these handlers, so a refused
    call is logged once, by the refusal."""

    def __init__(self, server: grpc.aio.Server, health_checks: bool = False) -> None:
        self.server = server
        self.health_level = logging.INFO if health_checks else logging.DEBUG

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(tuple(_LoggedGeneric(h, self.wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        wrapped = {name: self.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        self.server.add_registered_method_handlers(service, wrapped)  # type: ignore[attr-defined]

    def wrap(self, full_method: str, handler: Any) -> Any:
        """`handler` with its behaviour logged (health checks at their own level)."""
        if handler is None:
            return None
        service, _, method = full_method.lstrip("/").partition("/")
        level = self.health_level if service == HEALTH_SERVICE else logging.INFO
        for kind in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return handler._replace(**{kind: _logged(behavior, method, level)})
        return handler


class _LoggedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come back logged."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Callable[[str, Any], Any]) -> None:
        self.inner, self.wrap = inner, wrap

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        return self.wrap(details.method, self.inner.service(details))


def _logged(behavior: Any, method: str, level: int) -> Any:
    """`behavior` (a coroutine or async generator function) with the request id returned and the call
    logged when it ends, however it ends."""

    def begin(context: grpc.aio.ServicerContext) -> tuple[str, str, float]:
        rid = request_id(context.invocation_metadata())
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return rid, context.peer(), time.monotonic()

    def end(
        context: grpc.aio.ServicerContext, call: tuple[str, str, float], error: BaseException | None
    ) -> None:
        rid, peer, started = call
        code = context.code()
        if isinstance(error, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        elif error is not None and code is None:
            code = grpc.StatusCode.UNKNOWN
        status = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
        access(
            method=method,
            code=status,
            latency_s=time.monotonic() - started,
            peer=peer,
            request_id=rid,
            level=level,
        )

    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = begin(context)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(context, call, error)

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = begin(context)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            end(context, call, error)

    return unary
