#!/usr/bin/env bash
# `make demo`: image-cri-shim in front of a private containerd, pulling nginx:latest from a
# private registry with TLS and credentials. Everything runs inside tests/e2e/sandbox.sh (a
# private mount namespace: test host names and a test CA, the machine's files untouched) and is
# torn down at the end. The walk-through itself is tools/shim-demo, built on the test harness.
#
#   bash scripts/demo.sh BUILD_DIR
set -euo pipefail

build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)

for tool in image-cri-shim cri-client shim-demo; do
  if [ ! -x "$build/$tool" ]; then
    echo "demo: $build/$tool is missing: build first (make build, or cmake --build $build)" >&2
    exit 1
  fi
done
for cmd in containerd docker-registry skopeo umoci htpasswd openssl unshare setpriv; do
  if ! command -v "$cmd" >/dev/null; then
    echo "demo: $cmd is missing: run 'make deps' (scripts/install-deps.sh) as root" >&2
    exit 1
  fi
done

exec "$root/tests/e2e/sandbox.sh" "$build/shim-demo" \
  --shim "$build/image-cri-shim" --cri-client "$build/cri-client"
