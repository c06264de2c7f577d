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
    export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0"
    ;;
  thread)
    export TSAN_OPTIONS="log_path=$logs/report:suppressions=$here/tsan.supp:print_suppressions=0:second_deadlock_stack=1"
    ;;
  *)
    echo "$0: unknown sanitizer $kind (address or thread)" >&2
    exit 2
    ;;
esac

start=$(date +%s)
status=0
(cd "$build" && ctest --output-on-failure --timeout 900 "$@") || status=$?
echo "sanitizers: ctest ($kind) took $(($(date +%s) - start))s, exit $status"

reports=("$logs"/report*)
if [ -e "${reports[0]}" ]; then
  echo "sanitizers: ${#reports[@]} report(s) in $logs:" >&2
  for f in "${reports[@]}"; do
    echo "=== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
exit $status
