"""Regenerates the Python stubs in client/pipelined/v1 from protos/ (the one place generated code lives).

Usage: python scripts/generate_protos.py [--out DIR]   (DIR defaults to client/, the package root)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = Path("pipelined") / "v1"
HEADER = '"""Generated from protos/pipelined/v1 by scripts/generate_protos.py. Do not edit."""\n'


def generate(out_root: Path) -> list[Path]:
    """Writes the stubs under out_root/pipelined/v1 and returns the files written."""
    target = out_root / PACKAGE_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{env_path}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text(HEADER)
    (out_root / "pipelined" / "py.typed").touch(exist_ok=True)
    return sorted(p for p in target.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "client")
    files = generate(parser.parse_args().out)
    print(f"generated {len(files)} files")


if __name__ == "__main__":
    main()
