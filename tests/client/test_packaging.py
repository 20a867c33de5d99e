"""A client-only install: the wheel built from this checkout, installed into a fresh virtual environment
without torch (offline: the client's own dependencies are lent from this environment, nothing else), has
no broken command. Also: the server command's dependency check names every requirement of the extra."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from pipelined_server.launcher import SERVER_MODULES

REPO = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_server_command_checks_every_requirement_of_the_server_extra() -> None:
    # Requirements whose marker excludes this platform (uvloop off Linux) are not checked here.
    extra = {
        _name(r)
        for r in _pyproject()["project"]["optional-dependencies"]["server"]
        if Requirement(r).marker is None or Requirement(r).marker.evaluate()
    }
    assert set(SERVER_MODULES.values()) == extra


def test_optional_client_features_declare_their_dependency() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "soundfile" in {_name(r) for r in extras["audio"]}  # listen FILE, FileSource
    assert "sounddevice" in {_name(r) for r in extras["mic"]}  # listen --mic
    assert "tqdm" in {_name(r) for r in _pyproject()["project"]["dependencies"]}  # the CLI's progress bar


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements pull in on this platform, without extras."""
    seen: set[str] = set()
    todo = [_name(r) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in map(Requirement, importlib.metadata.requires(name) or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower())
    return seen


def _installed_tops(distributions: set[str]) -> set[Path]:
    """The top-level files and folders of these installed distributions (packages, modules, dist-info)."""
    tops: set[Path] = set()
    for name in distributions:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            if file.parts[0] not in ("..", "__pycache__"):
                tops.add(Path(str(dist.locate_file(file.parts[0]))))
    return tops


@pytest.fixture(scope="module")
def client_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client-only")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        cwd=root,  # the build's scratch files stay out of the checkout
        timeout=300,
    )
    wheel = next(wheels.glob("pipelined-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    lent = root / "lent"
    lent.mkdir()
    for top in _installed_tops(_closure(_pyproject()["project"]["dependencies"])):
        if not (lent / top.name).exists():
            (lent / top.name).symlink_to(top)
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "lent.pth").write_text(f"{lent}\n")
    (root / "wheel").write_text(str(wheel))
    return venv


def test_wheel_requires_no_torch_without_extras(client_only_venv: Path) -> None:
    wheel = Path((client_only_venv.parent / "wheel").read_text())
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    unconditional = {
        _name(line.split(":", 1)[1])
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    assert unconditional == {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert not unconditional & {"torch", "transformers", "pyyaml", "soundfile"}


def run(venv: Path, *command: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing of this checkout or of the test's PYTHONPATH leaks in.
    return subprocess.run(
        [str(venv / "bin" / command[0]), *command[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv.parent)},
        cwd=venv.parent,
    )


def test_client_only_install_has_no_broken_command(client_only_venv: Path) -> None:
    no_torch = run(client_only_venv, "python", "-c", "import torch")
    assert no_torch.returncode != 0, "the test environment must not see torch"
    client = run(client_only_venv, "pipelined", "--help")
    assert client.returncode == 0 and "exit codes" in client.stdout, client.stderr
    imported = run(
        client_only_venv, "python", "-c", "import pipelined, pipelined.aio; print(pipelined.Client)"
    )
    assert imported.returncode == 0, imported.stderr
    for args in (["--help"], []):
        server = run(client_only_venv, "pipelined-server", *args)
        assert server.returncode == 2
        assert "Traceback" not in server.stderr and len(server.stderr.strip().splitlines()) == 1
        assert "pip install 'pipelined[server]'" in server.stderr and "torch" in server.stderr


def test_server_command_runs_where_the_extra_is_installed() -> None:
    if any(importlib.util.find_spec(m) is None for m in SERVER_MODULES):
        pytest.skip("the server extra is not installed here")
    done = subprocess.run(
        [sys.executable, "-m", "pipelined_server.launcher", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--config" in done.stdout
