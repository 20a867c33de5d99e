"""deploy/kubernetes: each overlay renders and passes `kubernetes-validate --strict` offline
(scripts/check_manifests.sh), and its ConfigMap is a config the server accepts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    # The venv's bin first, so its kubernetes-validate is found without activating it.
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_env()["PATH"])


def _renderer() -> list[str]:
    if _tool("kubectl"):
        return ["kubectl", "kustomize"]
    if _tool("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize is installed (`make deploy-check` installs them)")


def _render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [*_renderer(), str(K8S / "overlays" / overlay)], capture_output=True, text=True, env=_env()
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_check_manifests_script() -> None:
    _renderer()
    if not _tool("kubernetes-validate"):
        pytest.skip(
            "kubernetes-validate is not installed (pip install kubernetes-validate; in the dev extra)"
        )
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_manifests.sh")], capture_output=True, text=True, env=_env()
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for overlay in OVERLAYS:
        assert f"ok: overlay {overlay} " in out.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_consistent_with_the_server(overlay: str) -> None:
    from pipelined_server.config import parse_config

    docs = {(d["kind"], d["metadata"]["name"]): d for d in _render(overlay)}
    kinds = {k for k, _ in docs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    config_map = next(d for (k, _), d in docs.items() if k == "ConfigMap")
    config = parse_config(yaml.safe_load(config_map["data"]["config.yaml"]))
    pod = docs[("Deployment", "pipelined")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # SIGTERM comes after the preStop sleep; the drain must end before the kubelet's SIGKILL.
    assert pod["terminationGracePeriodSeconds"] > sleep + config.grace_period_s
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == config.port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": config.port, "metrics": config.metrics_port}
    annotations = docs[("Deployment", "pipelined")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics_port)
    assert docs[("Service", "pipelined-headless")]["spec"]["clusterIP"] == "None"
    volume = next(v for v in pod["volumes"] if v.get("secret"))
    assert volume["secret"]["optional"] is True
    if overlay == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert all(m.device == "cuda:0" for m in config.models)
        assert pod["tolerations"] and pod["nodeSelector"]
    else:
        assert all(m.device == "cpu" for m in config.models)
