#!/usr/bin/env bash
# make fuzz: runs each libFuzzer target of BUILD_DIR/fuzz for SECONDS on a working copy of its seed
# corpus (new inputs go to BUILD_DIR/fuzz-work, never into fuzz/corpus; crash-*.known inputs are
# left out), then prints one line per target and fails if any target crashed. A crash is saved
# as BUILD_DIR/fuzz-work/<target>/crash-*: reproduce it with `BUILD_DIR/fuzz/fuzz_<target> FILE`,
# and once fixed, copy it into fuzz/corpus/<target>/ where the ctest replay keeps it tested.
#
#   fuzz/run.sh BUILD_DIR SECONDS [TARGET...]     (default: every target)
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(reference config configmap cri_message downstream upstream hpack)
fi

summary=()
failed=0
for t in "${targets[@]}"; do
  bin=$build/fuzz/fuzz_$t
  work=$build/fuzz-work/$t
  if [ ! -x "$bin" ]; then
    echo "fuzz: $bin is not built" >&2
    exit 2
  fi
  mkdir -p "$work/corpus"
  find "$here/corpus/$t" -type f ! -name '*.known' -exec cp -n -t "$work/corpus" {} +
  before=$(ls "$work/corpus" | wc -l)
  dict=()
  [ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
  echo "fuzz: $t for ${seconds}s ($before inputs in the working corpus)"
  touch "$work/.started"
  start=$(date +%s)
  # -timeout: one input taking longer is a hang; -rss_limit_mb: a leak or blow-up.
  "$bin" "$work/corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=30 \
    -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$work/" \
    >"$work/log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
  after=$(ls "$work/corpus" | wc -l)
  crashes=$(find "$work" -maxdepth 1 -newer "$work/.started" \( -name 'crash-*' -o -name 'leak-*' \
    -o -name 'timeout-*' -o -name 'oom-*' \) -printf '%f ')
  if [ $rc -ne 0 ] || [ -n "$crashes" ]; then
    failed=1
    summary+=("$t: FAILED after ${took}s (exit $rc) ${crashes:-} log $work/log")
    grep -E 'ERROR|property failed|SUMMARY' "$work/log" | head -5 >&2
  else
    summary+=("$t: ok, ${took}s, ${runs:-?} runs, ${cov:-cov ?}, corpus $before -> $after")
  fi
done

echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
exit $failed
