"""The committed stubs are exactly what scripts/generate_protos.py makes from protos/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate_protos.py"), "--out", str(tmp_path)], check=True
    )
    fresh = {
        p.relative_to(tmp_path / "pipelined" / "v1"): p.read_bytes()
        for p in (tmp_path / "pipelined" / "v1").rglob("*.py*")
    }
    committed_dir = REPO / "client" / "pipelined" / "v1"
    committed = {
        p.relative_to(committed_dir): p.read_bytes()
        for p in committed_dir.rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    assert sorted(map(str, committed)) == sorted(map(str, fresh)), "stub files differ: run `make protos`"
    stale = [str(name) for name, data in fresh.items() if committed[name] != data]
    assert not stale, f"stale generated stubs {stale}: run `make protos`"
