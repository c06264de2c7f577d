#!/usr/bin/env bash
# Checks sandbox.sh itself: inside, the test names resolve to 127.0.0.1, the test CA is in the
# bundle, the exit code comes back; outside, /etc/hosts and the trust store are byte-for-byte
# what they were and the sandbox's temporary files are gone.
set -euo pipefail
if [ "${SHIM_SANDBOX_ACTIVE:-}" = 1 ]; then
  echo "sandbox check skipped: already inside a sandbox, the machine's files are not visible"
  exit 0
fi
unset SHIM_KEEP_TEST_DIRS
here=$(cd "$(dirname "$0")" && pwd)
bundle=/etc/ssl/certs/ca-certificates.crt
before=$(sha256sum /etc/hosts "$bundle")

set +e
"$here/sandbox.sh" bash -c '
  set -e
  getent hosts registry-a.test | grep -q "^127.0.0.1"
  getent hosts origin.test | grep -q "^127.0.0.1"
  grep -q "$(sed -n 2p "$SHIM_TEST_CA_DIR/ca.crt")" /etc/ssl/certs/ca-certificates.crt
  [ -d "$SHIM_TEST_TMPDIR" ]
  echo "$SHIM_TEST_TMPDIR" > /tmp/shim-sandbox-check.$PPID
  exit 42'
rc=$?
set -e
inner_tmp=$(cat /tmp/shim-sandbox-check.* 2>/dev/null | head -1)
rm -f /tmp/shim-sandbox-check.*

fail=0
[ "$rc" = 42 ] || { echo "FAIL: exit code $rc, want 42 (or a check inside failed)"; fail=1; }
after=$(sha256sum /etc/hosts "$bundle")
[ "$before" = "$after" ] || { echo "FAIL: machine files changed:"; echo "$after"; fail=1; }
! grep -q "registry-a.test" /etc/hosts || { echo "FAIL: /etc/hosts maps test names"; fail=1; }
if [ -n "$inner_tmp" ] && [ -e "$inner_tmp" ]; then
  echo "FAIL: $inner_tmp left behind"
  fail=1
fi
[ "$fail" = 0 ] && echo "sandbox ok: names and CA inside, machine files untouched outside"
exit $fail
