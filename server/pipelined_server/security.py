"""Transport security and access control: TLS credentials, bearer tokens, and who may use which model.

Tokens live in a YAML file (`auth.tokens_file`), re-read on SIGHUP:

    tokens:
      - name: ci                 # shown in the access log, never the token itself
        token: 8c1f...           # at least 16 characters
      - name: dictation-app
        token: 41d0...
        models: [whisper-tiny.en]   # optional: only these models

A call carries `authorization: Bearer <token>` metadata. The interceptor below checks it before any
handler runs (missing or unknown: UNAUTHENTICATED) and records what the token may use in a context
variable of the call's task; the servicers' one choke point (`services/calls.py`, `CallInfo.model`) asks
`check_model` once the model is known (not allowed: PERMISSION_DENIED). grpc.health.v1 stays open, so
load balancers and Kubernetes probes need no token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from .config import TLSConfig
from .errors import ConfigError, PermissionDenied

log = logging.getLogger(__name__)

# Calls to these services need no token: health probes come from load balancers and kubelets.
OPEN_SERVICES = ("grpc.health.v1.Health",)
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Grant:
    """What one token may do: every model, or only those named."""

    name: str
    models: frozenset[str] | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


# The grant of the call running in this task (grpc.aio runs each call, interceptors included, in its
# own task, so a value set by the interceptor is seen by the handler and by no other call). None: no
# authentication configured.
_GRANT: ContextVar[Grant | None] = ContextVar("pipelined_grant", default=None)


def check_model(model: str) -> None:
    """Raises PermissionDenied when the call's token may not use `model`."""
    grant = _GRANT.get()
    if grant is not None and not grant.allows(model):
        raise PermissionDenied(f"this token ({grant.name}) may not use model {model!r}")


def principal() -> str:
    """The name of the call's token, for the access log ("" without authentication)."""
    grant = _GRANT.get()
    return grant.name if grant is not None else ""


def visible(model: str) -> bool:
    """Whether the call's token may see `model` (ListModels lists only those)."""
    grant = _GRANT.get()
    return grant is None or grant.allows(model)


def load_tokens(path: Path) -> list[tuple[bytes, Grant]]:
    """Parses a tokens file; a ConfigError names the entry at fault."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"auth.tokens_file {path}: {exc}") from exc
    entries = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"auth.tokens_file {path}: expected `tokens:` with a list of {{name, token}}")
    tokens: list[tuple[bytes, Grant]] = []
    for i, entry in enumerate(entries):
        where = f"auth.tokens_file {path}: tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "token", "models"}:
            raise ConfigError(f"{where}: expected a mapping with name, token and optional models")
        token, models = entry.get("token"), entry.get("models")
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{where}.token: a string of at least {MIN_TOKEN_CHARS} characters")
        if models is not None and not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
            raise ConfigError(f"{where}.models: a list of model names")
        name = str(entry.get("name") or f"token-{i}")
        grant = Grant(name, frozenset(models) if models is not None else None)
        tokens.append((token.encode(), grant))
    return tokens


class TokenStore:
    """The tokens of `auth.tokens_file`; `reload()` (SIGHUP) swaps them in whole, or keeps the old set
    when the new file is bad."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens = load_tokens(path)

    def reload(self) -> bool:
        try:
            self._tokens = load_tokens(self.path)
        except ConfigError as exc:
            log.error("tokens not reloaded, the previous ones stay: %s", exc)
            return False
        log.info("reloaded %d tokens from %s", len(self._tokens), self.path)
        return True

    def grant(self, authorization: str | None) -> Grant | None:
        """The grant of `Bearer <token>`, or None. Every stored token is compared in constant time, so
        the answer's timing says nothing about which token, or which prefix, came close."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode()
        found: Grant | None = None
        for token, grant in self._tokens:
            if hmac.compare_digest(token, candidate):
                found = grant
        return found


Rejected = Callable[[grpc.HandlerCallDetails, grpc.StatusCode, str], None]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call except health checks; `on_reject` logs the refusal (logs.py)."""

    def __init__(self, store: TokenStore, on_reject: Rejected | None = None) -> None:
        self.store = store
        self.on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service = details.method.lstrip("/").partition("/")[0]
        if service in OPEN_SERVICES:
            return await continuation(details)
        metadata = dict(details.invocation_metadata or ())  # type: ignore[arg-type]
        authorization = metadata.get("authorization")
        grant = self.store.grant(authorization if isinstance(authorization, str) else None)
        handler = await continuation(details)
        if grant is None:
            message = (
                "missing bearer token: send `authorization: Bearer <token>` metadata"
                if not authorization
                else "invalid bearer token"
            )
            if self.on_reject is not None:
                self.on_reject(details, grpc.StatusCode.UNAUTHENTICATED, message)
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, message)
        _GRANT.set(grant)
        return handler


def _refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape as `handler` that only aborts: a coroutine behavior serves every
    shape in grpc.aio (streaming responses would be written with context.write)."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler is None:  # unknown methods too: only an authenticated caller learns what exists
        return grpc.unary_unary_rpc_method_handler(refuse)
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        if getattr(handler, kind) is not None:
            return handler._replace(**{kind: refuse})
    return handler


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with a client CA, clients without a certificate it signed are refused
    during the handshake."""
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )
