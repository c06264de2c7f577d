#!/usr/bin/env bash
# User-space instructions per call through the shim, counted by callgrind (valgrind). Unlike CPU
# time, the count does not depend on what else runs on the machine, so a change to the relay can
# be judged to within a few instructions in one pair of runs.
#
#   bash bench/instructions.sh BUILD_DIR [METHOD] [BINARY]
#
# Two cri-bench runs (tests/e2e/sandbox.sh, root) with the measured shim under callgrind: N and
# 3N calls of METHOD (default Version) at one caller; their difference over 2N is the cost of one
# call, free of start-up and the pull. Prints the total and the share of each library. BINARY
# (default BUILD_DIR/image-cri-shim) may be another build of the shim, e.g. one from before a
# change. Needs valgrind (apt-get install valgrind).
set -euo pipefail

build=$(cd "${1:-build}" && pwd)
method=${2:-Version}
binary=$(realpath "${3:-$build/image-cri-shim}")
root=$(cd "$(dirname "$0")/.." && pwd)
calls=2000

for cmd in valgrind callgrind_annotate; do
  if ! command -v "$cmd" >/dev/null; then
    echo "instructions: $cmd is missing: apt-get install valgrind" >&2
    exit 1
  fi
done

work=$(mktemp -d /tmp/shim-instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT
# cri-bench starts the shim several times (--version, a start, the measured one): each gets its
# own profile, and the measured one is the largest.
cat >"$work/shim" <<WRAPPER
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$work/profile.%p" "$binary" "\$@"
WRAPPER
chmod +x "$work/shim"

# Runs cri-bench with N calls; leaves the measured shim's profile in $work/calls-N.
profile() {
  rm -f "$work"/profile.*
  if ! "$root/tests/e2e/sandbox.sh" "$build/cri-bench" --shim "$work/shim" --methods "$method" \
      --callers 1 --calls "$1" --rounds 2 --warmup 100 --memory-calls 0 --starts 1 \
      --count-calls 0 --bursts 0 --no-configmap --pipe "" >"$work/bench-$1.log" 2>&1; then
    echo "instructions: cri-bench failed:" >&2
    tail -20 "$work/bench-$1.log" >&2
    exit 1
  fi
  mv "$(ls -S "$work"/profile.* | head -n 1)" "$work/calls-$1"
}

# "library instructions" lines of a profile, functions summed per library (the shim's own code
# under its file name; malloc and free apart from the rest of libc).
by_library() {
  callgrind_annotate --auto=no --inclusive=no --threshold=100 "$1" | awk '
    /PROGRAM TOTALS/ { gsub(",", "", $1); print "TOTAL", $1; next }
    /^ *[0-9,]+ \( *[0-9.]+%\) +[^=]/ {
      n = $1; gsub(",", "", n)
      lib = "image-cri-shim:inlined-templates"
      if (match($0, /\[[^]]*\]$/)) { lib = substr($0, RSTART + 1, RLENGTH - 2); sub(/.*\//, "", lib) }
      if ($0 ~ /malloc\.c:|operator new|operator delete/) lib = "malloc/free"
      sum[lib] += n
    }
    END { for (l in sum) print l, sum[l] }'
}

echo "profiling $method through $binary (two cri-bench runs under callgrind, a few minutes)"
profile $calls
profile $((3 * calls))
by_library "$work/calls-$calls" | sort >"$work/a"
by_library "$work/calls-$((3 * calls))" | sort >"$work/b"
join -a 2 -e 0 -o 0,1.2,2.2 "$work/a" "$work/b" | awk -v n=$((2 * calls)) '
  $1 == "TOTAL" { total = ($3 - $2) / n; next }
  { per[$1] = ($3 - $2) / n }
  END {
    printf "instructions per %s call: %.0f\n", method, total
    for (l in per) if (per[l] >= 50 || per[l] <= -50) printf "  %8.0f  %s\n", per[l], l | "sort -rn"
  }' method="$method"
