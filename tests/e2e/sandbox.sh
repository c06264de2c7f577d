#!/usr/bin/env bash
# Runs a command inside a private mount namespace where the test host names resolve to 127.0.0.1
# and a freshly generated test CA is trusted, so real containerd, registries and skopeo verify TLS
# the way they would in production. The machine's /etc/hosts and trust store are never written:
# copies are bind-mounted over them, visible only inside the namespace, gone when it ends.
#
#   tests/e2e/sandbox.sh COMMAND [ARGS...]     exit code = the command's
#
# Inside, SHIM_TEST_CA_DIR holds ca.crt and ca.key (the harness issues server certs from it) and
# SHIM_TEST_TMPDIR is where the harness puts its temporary directories: removed at the end
# (unless SHIM_KEEP_TEST_DIRS=1), also when the command crashed or was killed.
# Running it again from inside a sandbox just runs the command (the setup is already in place).
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

if [ "${SHIM_SANDBOX_ACTIVE:-}" = 1 ] && [ -n "${SHIM_TEST_CA_DIR:-}" ] && [ -r "${SHIM_TEST_CA_DIR}/ca.crt" ]; then
  exec "$@"
fi

if [ "${SHIM_SANDBOX_STAGE:-}" != inner ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "sandbox: needs root (unshare --mount and bind mounts over /etc files)" >&2
    exit 1
  fi
  # Private propagation: our bind mounts never leak back into the machine's namespace.
  SHIM_SANDBOX_STAGE=inner exec unshare --mount --propagation private -- bash "$0" "$@"
fi
unset SHIM_SANDBOX_STAGE

hosts=(registry-a.test registry-b.test registry-c.test origin.test)
bundle_src=/etc/ssl/certs/ca-certificates.crt

dir=$(mktemp -d /tmp/shim-sb.XXXXXX)
cleanup() {
  # The namespace (and with it the bind mounts) ends with this process; only the files remain.
  umount /etc/hosts 2>/dev/null || true
  umount "$bundle_src" 2>/dev/null || true
  if [ "${SHIM_KEEP_TEST_DIRS:-}" = 1 ]; then
    echo "sandbox: kept $dir" >&2
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT

mkdir -p "$dir/ca"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=image-cri-shim test CA $$" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.crt" 2>"$dir/ca/openssl.log" || {
  cat "$dir/ca/openssl.log" >&2
  exit 1
}

{
  cat /etc/hosts
  echo
  echo "# image-cri-shim test sandbox"
  echo "127.0.0.1 ${hosts[*]}"
} >"$dir/hosts"

if [ -r "$bundle_src" ]; then
  cat "$bundle_src" >"$dir/ca-certificates.crt"
else
  # No system bundle: create the mount point inside the namespace only is impossible (it would be
  # a write to the machine), so refuse clearly.
  echo "sandbox: $bundle_src is missing (install ca-certificates)" >&2
  exit 1
fi
cat "$dir/ca/ca.crt" >>"$dir/ca-certificates.crt"
chmod 0644 "$dir/hosts" "$dir/ca-certificates.crt"

mount --bind "$dir/hosts" /etc/hosts
mount --bind "$dir/ca-certificates.crt" "$bundle_src"

mkdir -p "$dir/t"
# Traversable (not listable) by others: the harness runs skopeo as an unprivileged user, which
# must reach the test images under it.
chmod 0711 "$dir" "$dir/t"
export SHIM_TEST_TMPDIR="$dir/t"
export SHIM_TEST_CA_DIR="$dir/ca"
export SHIM_SANDBOX_ACTIVE=1
# Go programs honour these too; point them at the same bundle in case a distro moved the default.
export SSL_CERT_FILE="$bundle_src"

# The command runs as a child so that a SIGTERM or SIGINT (ctest timeout, Ctrl-C) reaches it and
# its destructors stop what it started before the cleanup above runs. `<&0` keeps stdin (a
# background job would get /dev/null).
set +e
"$@" <&0 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
wait "$child"
rc=$?
while kill -0 "$child" 2>/dev/null; do  # wait was interrupted by a trapped signal
  wait "$child"
  rc=$?
done
set -e
exit $rc
