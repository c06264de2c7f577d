#!/usr/bin/env bash
# Installs, from Debian's archive, everything the build, the tests and the demo need.
# Idempotent: does nothing when every package is already there.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config ccache clang-format
  # libraries the daemon links
  libnghttp2-dev libprotobuf-dev protobuf-compiler libyaml-cpp-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev
  # tests and tools (gRPC C++ only outside the data path)
  libgrpc++-dev protobuf-compiler-grpc libgtest-dev libgmock-dev
  # real parts the end-to-end tests and the demo run
  containerd docker-registry skopeo umoci busybox-static apache2-utils openssl util-linux
  procps curl
  # make package (CPack DEB: dpkg-shlibdeps, file) and its tests (systemd-analyze verify; lintian,
  # and man for the manual page)
  dpkg-dev file systemd lintian man-db
)
# `install-deps.sh fuzz` (make fuzz): clang and its libFuzzer runtime; make test needs neither.
if [ "${1:-}" = fuzz ]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The package starts nothing under a container init, but on a systemd machine it would:
# the tests run their own containerd on their own paths and never need the system one.
