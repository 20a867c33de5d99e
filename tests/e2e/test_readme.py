"""README.md runs as written: every fenced ```python and ```bash block is executed, in order, against real
servers, from a folder whose ../shared/data is the shared recordings (the layout the README assumes).

The documented mapping from what the README says to what the test provides:
- `localhost:50051` -> a server on the embedded defaults (real weights: whisper-tiny.en, all-minilm-l6-v2,
  smollm2-135m-instruct), on a random port; shell blocks also get it as PIPELINED_TARGET;
- `localhost:50052` -> a server built from the README's `local-models.yaml` block, its `./models/vit` and
  `./models/tapas` being tiny random models of those architectures (the Hub is unreachable in tests);
- `pipelined` on the PATH -> this interpreter's bin folder first (what `. .venv/bin/activate` does).
Python blocks run like a REPL session: each top-level expression's value is printed, so the checks below can
read the results the comments promise. Blocks that cannot run here say so in their info string
(```bash no-test) and must be in NOT_RUN, a short list kept on purpose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from harness import ServerThread
from paths import REPO, SHARED_DATA
from pipelined_server.config import default_config, parse_config
from pipelined_server.sources.embedded import is_available

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not all(is_available(m) for m in ("whisper-tiny.en", "all-minilm-l6-v2", "smollm2-135m-instruct")),
        reason="the embedded weight packages are not installed",
    ),
    pytest.mark.skipif(
        not SHARED_DATA.exists(), reason=f"{SHARED_DATA} is absent (the README's sample files)"
    ),
]

# The blocks that do not run here, by their first line, and why.
NOT_RUN = {
    "make serve": "starts the server (the test runs its own)",
    ". .venv/bin/activate": "the test puts the venv's bin folder on the PATH itself",
    "pipelined listen --mic": "needs a microphone (and `pipelined demo` serves a web page until stopped)",
    "pip install 'pipelined[demo]'": "the web demo serves a page until stopped",
    "import pipelined.demo": "launches the web demo (serves until stopped)",
    "PIPELINED_TOKEN=... pipelined demo --target server.example:50051 --ca-file ca.pem \\": "a demo behind TLS/auth on another host",
    "from transformers import pipeline": "downloads from the Hub (the test builds tiny models instead)",
    "pipelined-server --config local-models.yaml --port 50052": "starts a server (the test runs this config)",
    "make test": "the development commands (the suite itself, lint, benchmarks)",
    ".venv/bin/python -m pytest -m fault tests/fault": "a test suite of its own",
    "docker run -d -p 127.0.0.1:50051:50051 -p 127.0.0.1:9464:9464 pipelined-server:latest": "needs Docker and the image",
    # The security and scale-out walk-throughs start servers on fixed ports in the background and leave them
    # running; the same flows run in tests/e2e/test_security.py and tests/e2e/test_scale_out.py.
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=pipelined-ca \\": (
        "starts a TLS server in the background (tests/e2e/test_security.py runs the same flow)"
    ),
    "from pipelined import Client": "calls the TLS server of the block above (tests/e2e/test_security.py)",
    "for p in 50071 50072 50073; do": "starts three servers in the background (tests/e2e/test_scale_out.py)",
    "import os": "kills one of those servers (tests/e2e/test_scale_out.py runs the same flow)",
}

# What each block's output must show (regular expressions), by a line the block contains.
EXPECTED = {
    "asr(jfk)  # {": [r"fellow Americans", r"'timestamp': \(0\.0, ", r"final  ?\S", r"\(384,\)", r"Paris"],
    "pipelined transcribe ../shared/data/audio/jfk.flac --timestamps word": [
        r"Americans",
        r"NAME +TASK",
        r"server 127\.0\.0\.1:\d+: SERVING",
        r'"status": "SERVING"',
    ],
    'pipe = Client("localhost:50051").pipeline(model="all-minilm-l6-v2")': [r"\(384,\)"],
    'classify = client.pipeline("image-classification", model="vit")': [r"'label': ", r"'answer': "],
}


@dataclass
class Block:
    language: str
    flags: str
    code: str
    line: int

    @property
    def first_line(self) -> str:
        return next(ln for ln in self.code.splitlines() if ln.strip()).split("#")[0].strip()


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"^```(\w*)([^\n]*)\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(match.group(1), match.group(2).strip(), match.group(3), line))
    return blocks


BLOCKS = readme_blocks()
RUN = [b for b in BLOCKS if b.language in ("python", "bash") and "no-test" not in b.flags]


def test_only_the_listed_blocks_are_not_run() -> None:
    skipped = [b for b in BLOCKS if b.language in ("python", "bash") and "no-test" in b.flags]
    assert {b.first_line for b in skipped} == set(NOT_RUN), [b.first_line for b in skipped]
    unmarked = [b for b in BLOCKS if b.language in ("py", "sh", "shell", "console")]
    assert not unmarked, "use ```python or ```bash so the block runs in this test"
    assert all(any(key in b.code for b in RUN) for key in EXPECTED)


def _local_models_document() -> dict:
    block = next(b for b in BLOCKS if b.language == "yaml" and "# local-models.yaml" in b.code)
    return yaml.safe_load(block.code)


def test_server_config_examples_are_valid() -> None:
    for block in (b for b in BLOCKS if b.language == "yaml"):
        parse_config(yaml.safe_load(block.code))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout-like folder: ../shared/data are the shared recordings, ./models the local models."""
    root = tmp_path_factory.mktemp("readme")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(SHARED_DATA.resolve())
    checkout = root / "checkout"
    checkout.mkdir()
    from tiny_generic_models import build_tiny_tapas
    from tiny_vision_models import build_tiny_image_classifier

    build_tiny_image_classifier(checkout / "models" / "vit")
    build_tiny_tapas(checkout / "models" / "tapas")
    return checkout


@pytest.fixture(scope="module")
def targets(workdir: Path) -> Iterator[dict[str, str]]:
    local_models = _local_models_document()
    for model in local_models["models"]:
        model["source"] = str(workdir / model["source"])
    servers = [
        ServerThread(default_config().model_copy(update={"host": "127.0.0.1", "port": 0, "metrics_port": 0})),
        ServerThread(parse_config({**local_models, "host": "127.0.0.1", "port": 0, "metrics_port": 0})),
    ]
    yield {"localhost:50051": servers[0].target, "localhost:50052": servers[1].target}
    for server in servers:
        server.stop()


REPL = r"""
import ast, sys
source = sys.stdin.read()
scope = {"__name__": "__main__"}
for node in ast.parse(source).body:
    if isinstance(node, ast.Expr):
        value = eval(compile(ast.Expression(node.value), "<README>", "eval"), scope)
        if value is not None:
            print(repr(value), flush=True)
    else:
        exec(compile(ast.Module([node], []), "<README>", "exec"), scope)
"""


@pytest.mark.parametrize("block", RUN, ids=lambda b: f"README.md:{b.line}")
def test_block_runs_as_written(block: Block, workdir: Path, targets: dict[str, str]) -> None:
    code = block.code
    for written, real in targets.items():
        code = code.replace(written, real)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "PIPELINED_TARGET": targets["localhost:50051"],
    }
    command = [sys.executable, "-c", REPL] if block.language == "python" else ["bash", "-euo", "pipefail"]
    done = subprocess.run(
        command, input=code, capture_output=True, text=True, timeout=600, cwd=workdir, env=env
    )
    assert done.returncode == 0, f"README.md:{block.line} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    for key, patterns in EXPECTED.items():
        if key in block.code:
            for pattern in patterns:
                assert re.search(pattern, done.stdout), (
                    f"README.md:{block.line}: no {pattern!r} in\n{done.stdout}"
                )
    # The blank results: a live loop printing `interim ''`, a generation printing nothing.
    assert "interim ''" not in done.stdout and "final ''" not in done.stdout
