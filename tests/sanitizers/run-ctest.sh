#!/usr/bin/env bash
# Runs ctest in a sanitizer build directory (make test-asan / make test-tsan) with the options and
# suppressions of tests/sanitizers/, then fails if any process wrote a sanitizer report: the test
# binaries and every shim the end-to-end tests start (they inherit the environment) write their
# reports to BUILD_DIR/sanitizer-logs, so a daemon bug fails the run even when the test that
# started the daemon did not notice.
#
#   tests/sanitizers/run-ctest.sh BUILD_DIR address|thread [CTEST_ARGS...]
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR address|thread [CTEST_ARGS...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
kind=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
logs=$build/sanitizer-logs
rm -rf "$logs"
mkdir -p "$logs"

case $kind in
  address)
    export ASAN_OPTIONS="log_path=$logs/report:detect_leaks=1:halt_on_error=1:check_initialization_order=1:strict_init_order=1:detect_invalid_pointer_pairs=0"
    export UBSAN_OPTIONS="log_path=$logs/report:print_stacktrace=1:halt_on_error=1"
    ;;
  thread)
    export TSAN_OPTIONS="log_path=$logs/report:suppressions=$here/tsan.supp:print_suppressions=0:second_deadlock_stack=1"
    ;;
  *)
    echo "$0: unknown sanitizer $kind (address or thread)" >&2
    exit 2
    ;;
esac

# Prints every report file of directory $1 and returns 1 if there is any.
fail_on_reports() {
  local reports=("$1"/report*)
  [ -e "${reports[0]}" ] || return 0
  echo "sanitizers: ${#reports[@]} report(s) in $1:" >&2
  for f in "${reports[@]}"; do
    echo "=== $f" >&2
    cat "$f" >&2
  done
  return 1
}

start=$(date +%s)
status=0
if [ "$kind" = address ]; then
  (cd "$build" && ctest --output-on-failure --timeout 900 "$@") || status=$?
  fail_on_reports "$logs" || status=1
else
  # Tests whose own process runs gRPC (relay_test's client and fake runtime, the e2e harness's
  # CRI client, cri-bench) cannot be judged by TSan: gRPC's inline header code is compiled into
  # those binaries while the synchronisation that orders it lives in Debian's uninstrumented
  # libgrpc, so TSan reports races between gRPC's own threads and the caller's (hundreds per e2e
  # test) that no called_from_lib entry can reach. They still run, because the shim processes
  # the e2e tests start are built with TSan and link no gRPC: any report from an image-cri-shim
  # process fails the run; reports of the gRPC-linked harness processes are only counted.
  grpc_tests='^(relay|e2e_.*|bench_smoke)$'
  (cd "$build" && ctest --output-on-failure --timeout 900 -E "$grpc_tests" "$@") || status=$?
  fail_on_reports "$logs" || status=1
  harness=$build/sanitizer-logs-grpc
  rm -rf "$harness"
  mkdir -p "$harness"
  export TSAN_OPTIONS=${TSAN_OPTIONS/log_path=$logs/log_path=$harness}
  # exitcode=0: a harness process with (false) reports still passes or fails on its own checks.
  export TSAN_OPTIONS="$TSAN_OPTIONS:exitcode=0"
  (cd "$build" && ctest --output-on-failure --timeout 900 -R "$grpc_tests" "$@") || status=$?
  shim_reports=$(grep -l 'image-cri-shim+0x' "$harness"/report* 2>/dev/null || true)
  if [ -n "$shim_reports" ]; then
    echo "sanitizers: reports from the shim itself:" >&2
    for f in $shim_reports; do
      echo "=== $f" >&2
      cat "$f" >&2
    done
    status=1
  fi
  harness_warnings=$(cat "$harness"/report* 2>/dev/null | grep -c 'WARNING: ThreadSanitizer' || true)
  echo "sanitizers: $harness_warnings TSan warning(s) in gRPC-linked test processes, not judged" \
    "(kept in $harness)"
fi
echo "sanitizers: ctest ($kind) took $(($(date +%s) - start))s, exit $status"
exit $status
