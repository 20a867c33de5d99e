#!/usr/bin/env bash
# Renders each kustomize overlay of deploy/kubernetes and validates it offline with
# `kubernetes-validate --strict` (built-in schemas, no cluster). The ServiceMonitor lives in the optional
# component deploy/kubernetes/components/servicemonitor: it is a CRD (Prometheus Operator) with no built-in
# schema, so it is rendered on top of each overlay and checked for shape here, not by kubernetes-validate.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
k8s="$root/deploy/kubernetes"
VALIDATE="${KUBERNETES_VALIDATE:-kubernetes-validate}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"

render() {  # render DIR -> stdout
  if command -v kubectl >/dev/null 2>&1; then kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then kustomize build "$1"
  else echo "check_manifests: neither kubectl nor kustomize found" >&2; exit 3; fi
}
command -v "$VALIDATE" >/dev/null 2>&1 || { echo "check_manifests: $VALIDATE not found" >&2; exit 3; }

# Under the tree: kustomize only accepts relative paths to bases and components.
out="$(mktemp -d "$root/deploy/.check.XXXXXX")"
trap 'rm -rf "$out"' EXIT
render_with() {  # render_with OVERLAY COMPONENT -> stdout: the overlay with components/COMPONENT added
  local with="$out/with-$2-$(basename "$1")"
  mkdir -p "$with"
  cat > "$with/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$(realpath --relative-to="$with" "$1")]
components: [$(realpath --relative-to="$with" "$k8s/components/$2")]
YAML
  render "$with"
}
for overlay in "$k8s"/overlays/*/; do
  name="$(basename "$overlay")"
  render "$overlay" > "$out/$name.yaml"
  "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$out/$name.yaml"
  echo "ok: overlay $name ($(grep -c '^kind:' "$out/$name.yaml") resources, Kubernetes $K8S_VERSION, strict)"
  # The same overlay with the ServiceMonitor component: everything but the CRD is validated again.
  render_with "$overlay" servicemonitor > "$out/$name-sm.yaml"
  grep -q '^kind: ServiceMonitor' "$out/$name-sm.yaml" || { echo "no ServiceMonitor rendered" >&2; exit 1; }
  grep -q 'port: metrics' "$out/$name-sm.yaml" || { echo "ServiceMonitor names no metrics port" >&2; exit 1; }
  echo "ok: overlay $name + components/servicemonitor renders (CRD, not schema-validated)"
  # The same overlay with TLS and tokens (components/security): built-in kinds only, validated strictly.
  render_with "$overlay" security > "$out/$name-security.yaml"
  "$VALIDATE" --strict --quiet -k "$K8S_VERSION" "$out/$name-security.yaml"
  echo "ok: overlay $name + components/security (Kubernetes $K8S_VERSION, strict)"
done
