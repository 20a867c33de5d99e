"""`pipelined demo`: its arguments and its run. Importing this module does not import Gradio (the CLI
lists `demo` whether or not the extra is installed)."""

from __future__ import annotations

import argparse
import hmac
import inspect
import os
from typing import Any

from ..client import Client

TOKEN_ENV = "PIPELINED_TOKEN"
INSTALL = "pip install 'pipelined[demo]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the web page listens on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port of the web page (default 7860)")
    # SUPPRESS: the same options given before the subcommand (`pipelined --ca-file F demo`) stay.
    parser.add_argument(
        "--ca-file",
        default=argparse.SUPPRESS,
        help="TLS: CA certificate that signed the server's certificate",
    )
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"bearer token for the server (default ${TOKEN_ENV}); the page then asks for it as its password",
    )
    parser.add_argument(
        "--certfile", default=None, help="serve the page over HTTPS with this certificate (PEM)"
    )
    parser.add_argument("--keyfile", default=None, help="the private key of --certfile (PEM)")


def credentials(args: argparse.Namespace) -> dict[str, Any]:
    """The TLS/auth arguments given, as `Client` keyword arguments (only those set)."""
    ca_file, token = getattr(args, "ca_file", None), getattr(args, "token", None)
    given = {"ca_file": ca_file, "token": token or os.environ.get(TOKEN_ENV) or None}
    return {k: v for k, v in given.items() if v}


def secured(client: Client, args: argparse.Namespace) -> Client:
    """`client`, or a client to the same target with the TLS/auth arguments when some were given."""
    extra = credentials(args)
    if not extra:
        return client
    accepted = inspect.signature(Client).parameters
    missing = sorted(k for k in extra if k not in accepted)
    if missing:
        raise SystemExit(
            f"pipelined demo: this pipelined client has no {', '.join(missing)} option yet "
            "(it needs a release with TLS/auth support)"
        )
    return Client(client.target, timeout=client.timeout, strict=client.strict, **extra)


def page_options(args: argparse.Namespace) -> dict[str, Any]:
    """Gradio launch options that protect the page as the server is protected: HTTPS with the given
    certificate, and, when the server takes a token, a login whose password is that token (any user
    name), so the page grants nobody more than the token does."""
    options: dict[str, Any] = {}
    if bool(args.certfile) != bool(args.keyfile):
        raise SystemExit("pipelined demo: --certfile and --keyfile go together")
    if args.certfile:
        # ssl_verify covers only Gradio's check that its own URL answers (a private CA is not trusted there).
        options.update(ssl_certfile=args.certfile, ssl_keyfile=args.keyfile, ssl_verify=False)
    token = credentials(args).get("token")
    if token:
        options["auth"] = lambda user, password: hmac.compare_digest(password.encode(), token.encode())
        options["auth_message"] = "This demo calls a server that needs a token: log in with that token."
    return options


def run(client: Client, args: argparse.Namespace) -> int:
    try:
        from .app import serve
    except ImportError as error:
        raise SystemExit(f"pipelined demo needs Gradio: {INSTALL} ({error})") from None
    serve(secured(client, args), host=args.host, port=args.port, **page_options(args))
    return 0
