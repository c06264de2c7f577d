#!/usr/bin/env bash
# `make bench`: the full benchmark of the shim against direct containerd (bench/cri-bench),
# inside tests/e2e/sandbox.sh (a private mount namespace with the test host names and a test CA;
# the machine's files stay untouched). Needs root. Extra arguments go to cri-bench, e.g.
#   bash bench/run.sh build --markdown /tmp/bench.md
#   bash bench/run.sh build --quick
set -euo pipefail

build=${1:-build}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$build" && pwd)

for tool in image-cri-shim cri-bench; do
  if [ ! -x "$build/$tool" ]; then
    echo "bench: $build/$tool is missing: build first (make build, or cmake --build $build)" >&2
    exit 1
  fi
done
for cmd in containerd docker-registry skopeo umoci htpasswd openssl unshare setpriv; do
  if ! command -v "$cmd" >/dev/null; then
    echo "bench: $cmd is missing: run 'make deps' (scripts/install-deps.sh) as root" >&2
    exit 1
  fi
done

# The package's size is reported when one was built (make package; make bench builds it).
deb=()
newest=$(ls -t "$build"/image-cri-shim_*.deb 2>/dev/null | head -n 1 || true)
if [ -n "$newest" ]; then deb=(--deb "$newest"); fi

exec "$root/tests/e2e/sandbox.sh" "$build/cri-bench" --shim "$build/image-cri-shim" "${deb[@]}" "$@"
