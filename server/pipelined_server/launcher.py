"""The `pipelined-server` command: checks that the server's dependencies (the `server` extra) are installed
before anything imports them, then runs `cli.main`.

One distribution carries the client and the server (one version, one wheel; the server imports the client's
generated stubs), so a client-only `pip install pipelined` installs this command too. Without the extra it
says what to install, in one line, and exits 2, instead of a traceback (`No module named 'yaml'`).
"""

from __future__ import annotations

import importlib.util
import sys

# Import name -> distribution, for every requirement of the `server` extra in pyproject.toml
# (tests/client/test_packaging.py keeps the two in step).
SERVER_MODULES = {
    "torch": "torch",
    "transformers": "transformers",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "prometheus_client": "prometheus-client",
    "av": "av",
    "soundfile": "soundfile",
    "soxr": "soxr",
    "yaml": "pyyaml",
    "pydantic": "pydantic",
    "PIL": "pillow",
    "silero_vad": "silero-vad",
    "accelerate": "accelerate",
    "gguf": "gguf",
    "pytesseract": "pytesseract",
}
if sys.platform.startswith("linux"):  # the extra asks for it on Linux only (the server's event loop there)
    SERVER_MODULES["uvloop"] = "uvloop"


def missing_distributions() -> list[str]:
    return [dist for module, dist in SERVER_MODULES.items() if importlib.util.find_spec(module) is None]


def main(argv: list[str] | None = None) -> None:
    missing = missing_distributions()
    if missing:
        print(
            "pipelined-server: the server is not installed (missing: "
            f"{', '.join(missing)}); install it with: pip install 'pipelined[server]'",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from .cli import main as serve

    serve(argv)


if __name__ == "__main__":
    main()
