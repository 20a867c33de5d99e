"""deploy/kubernetes/components/security on each overlay: the env it sets makes a config the server
accepts, naming files where the Secrets are mounted, with the probes on the plaintext health port."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from pipelined_server.config import apply_env, parse_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_component_wires_the_secrets(overlay: str, tmp_path: Path) -> None:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed (`make deploy-check` installs it)")
    # kustomize takes only relative paths to bases and components: render from inside the tree.
    work = K8S / f".test-security-{overlay}-{tmp_path.name}"
    work.mkdir()
    try:
        (work / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [../overlays/{overlay}]\ncomponents: [../components/security]\n"
        )
        out = subprocess.run(["kubectl", "kustomize", str(work)], capture_output=True, text=True)
    finally:
        shutil.rmtree(work)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    config_map = next(d for (k, _), d in docs.items() if k == "ConfigMap")
    pod = docs[("Deployment", "pipelined")]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    data, _ = apply_env(yaml.safe_load(config_map["data"]["config.yaml"]), env)
    config = parse_config(data)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert config.tls.enabled and config.auth.tokens_file
    for path in (config.tls.cert_file, config.tls.key_file, config.auth.tokens_file):
        volume = next(name for name, at in mounts.items() if path.startswith(at + "/"))
        assert secrets[volume]["optional"] is False
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == config.health_port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == config.health_port and ports["grpc"] == config.port
    annotations = docs[("Deployment", "pipelined")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scheme"] == "https"
