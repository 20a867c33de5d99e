"""Logging set-up and the access log: one line per call, with what an operator needs to follow a request
(method, model, status, latency, peer, request id, the token's name) and never what the caller sent.

The request id comes from the caller's `x-request-id` metadata (a proxy's or the client's own), or is
made here; either way it is returned in the trailing metadata, so a client can quote it in a bug report.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import grpc

ACCESS = logging.getLogger("pipelined.access")
REQUEST_ID_KEY = "x-request-id"
# A caller's id is echoed and logged: short and plain, so it can neither forge log lines nor grow them.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def setup(level: str, fmt: str, access_log: bool = True) -> None:
    """Root logging: plain text lines, or one JSON object per line (`logging.format: json`)."""
    handler = logging.StreamHandler()
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    ACCESS.setLevel(logging.INFO if access_log else logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the access log's fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


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
) -> None:
    """Logs one finished call (INFO, logger `pipelined.access`)."""
    if not ACCESS.isEnabledFor(logging.INFO):
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
    ACCESS.info(text, extra={"access": fields})
