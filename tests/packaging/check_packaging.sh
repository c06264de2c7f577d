#!/usr/bin/env bash
# Checks what `make install` and `make package` produce, without touching the machine: every
# install goes into a temporary directory that is removed at the end.
#
#   check_packaging.sh install BUILD_DIR SOURCE_DIR   cmake --install with DESTDIR: layout, modes,
#                                                     the unit, no overwrite of a config
#   check_packaging.sh deb BUILD_DIR SOURCE_DIR       cpack DEB, its control data, copyright,
#                                                     changelog and manual page, then dpkg -i
#                                                     into a private root, --version, dpkg -P
#   check_packaging.sh lintian BUILD_DIR SOURCE_DIR   cpack DEB, then lintian: any error,
#                                                     warning or info fails, so does an override
#                                                     without a reason or no longer matching
# Exit 0 when every check passes; otherwise each failed check is printed and the exit is 1.
set -uo pipefail

mode=${1:?mode: install or deb}
build=${2:?build dir}
src=${3:?source dir}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shim-pkg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() {
  echo "ok: $*"
}
# check DESCRIPTION COMMAND...: the command must succeed.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
mode_of() {
  stat -c %a "$1" 2>/dev/null
}
expect_mode() {
  local path=$1 want=$2 got
  got=$(mode_of "$path")
  if [ "$got" = "$want" ]; then pass "$path has mode $want"; else fail "$path has mode '$got', want $want"; fi
}
# The unit's ExecStart binary must be `want`, with the config path the daemon defaults to.
expect_exec_start() {
  local unit=$1 want=$2
  if grep -qx "ExecStart=$want --file /etc/image-cri-shim/config.yaml" "$unit"; then
    pass "$unit starts $want"
  else
    fail "$unit: ExecStart is '$(grep '^ExecStart=' "$unit")', want $want --file /etc/image-cri-shim/config.yaml"
  fi
}
# systemd-analyze verify on a copy of the unit whose ExecStart is the staged binary (verify
# insists that the command exists), with the staged manual pages (it runs man for each
# Documentation=man:...). Skipped when systemd-analyze is not installed.
verify_unit() {
  local unit=$1 binary=$2 installed_path=$3 man_dir=$4
  if ! command -v systemd-analyze >/dev/null; then
    echo "skip: systemd-analyze not installed (apt-get install systemd)"
    return
  fi
  local copy=$tmp/verify/image-cri-shim.service out
  mkdir -p "$tmp/verify"
  sed "s#^ExecStart=$installed_path #ExecStart=$binary #" "$unit" >"$copy"
  # Documentation=man:image-cri-shim(8) must resolve too: MANPATH is the staged manual pages.
  if out=$(MANPATH=$man_dir systemd-analyze verify "$copy" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify $unit"
  else
    fail "systemd-analyze verify $unit: $out"
  fi
}
# The example configuration must load: `rewrite` loads and validates it, then rewrites a name.
expect_config_loads() {
  local binary=$1 config=$2 out
  if out=$("$binary" --file "$config" rewrite nginx:latest 2>&1) &&
    grep -q 'registry.example.com/library/nginx:latest' <<<"$out"; then
    pass "$config loads and rewrites nginx:latest"
  else
    fail "$binary --file $config rewrite nginx:latest: $out"
  fi
}

# Every long option of `--help`, of the program and of each subcommand (CLI11's layout:
# "  -f,--file TEXT ..." under "Options:", subcommand names under "Subcommands:").
help_words() {
  local binary=$1 help sub
  help=$("$binary" --help)
  grep -oE '^  (-[A-Za-z],)?--[a-z][a-z-]*' <<<"$help" | sed 's/.*,//; s/^ *//'
  for sub in $(awk '/^Subcommands:/ {on = 1; next} on && /^  [a-z]/ {print $1}' <<<"$help"); do
    echo "$sub"
    "$binary" "$sub" --help | grep -oE '^  (-[A-Za-z],)?--[a-z][a-z-]*' | sed 's/.*,//; s/^ *//'
  done | awk '!seen[$0]++'
}
# The manual page must render without a warning from man/groff (what lintian runs) and name
# every option and subcommand the binary has.
expect_manual_page() {
  local page=$1 binary=$2 out word text
  if out=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null) &&
    [ -z "$out" ]; then
    pass "$page renders without warnings"
  else
    fail "$page: man --warnings: $out"
  fi
  # The roff source with \- as -, whether the page is gzipped or not.
  text=$(zcat -f "$page" | sed 's/\\-/-/g')
  for word in $(help_words "$binary"); do
    if grep -qE -- "(^|[^a-z-])$word([^a-z-]|\$)" <<<"$text"; then
      pass "$page describes $word"
    else
      fail "$page does not describe $word, which $binary --help lists (docs/image-cri-shim.8)"
    fi
  done
}
# What Debian asks of every package, as unpacked under ROOT: the copyright file (Apache-2.0,
# pointing at the system's copy of the same text as LICENSE), a changelog whose version is the
# package's and whose maintainer is the Maintainer field, the manual page.
expect_package_docs() {
  local deb=$1 root=$2 doc=$2/usr/share/doc/image-cri-shim version maintainer parsed
  check "LICENSE is the Apache License 2.0 of /usr/share/common-licenses" \
    cmp -s "$src/LICENSE" /usr/share/common-licenses/Apache-2.0
  check "copyright: Files: * has a Copyright and License: Apache-2.0" \
    awk -v RS= '/^Files: \*\n/ && /\nCopyright: [^\n]+/ && /\nLicense: Apache-2.0(\n|$)/ {found = 1}
      END {exit !found}' "$doc/copyright"
  check "copyright points at /usr/share/common-licenses/Apache-2.0" \
    grep -q '/usr/share/common-licenses/Apache-2.0' "$doc/copyright"
  version=$(dpkg-deb -f "$deb" Version)
  maintainer=$(dpkg-deb -f "$deb" Maintainer)
  if ! zcat "$doc/changelog.gz" >"$tmp/changelog" 2>/dev/null; then
    fail "$doc/changelog.gz is not gzip"
  fi
  parsed=$(dpkg-parsechangelog -l "$tmp/changelog" -S Version 2>&1)
  if [ "$parsed" = "$version" ]; then
    pass "changelog's latest entry is version $version"
  else
    fail "changelog's latest version is '$parsed', the package's $version (packaging/deb/changelog)"
  fi
  parsed=$(dpkg-parsechangelog -l "$tmp/changelog" -S Maintainer 2>&1)
  if [ "$parsed" = "$maintainer" ]; then
    pass "changelog's maintainer is the Maintainer field ($maintainer)"
  else
    fail "changelog's maintainer is '$parsed', the Maintainer field '$maintainer'"
  fi
  if grep -qiE 'root|localhost|example\.' <<<"$maintainer"; then
    fail "Maintainer is not a real address: $maintainer"
  else
    pass "Maintainer has a real address"
  fi
  expect_manual_page "$root/usr/share/man/man8/image-cri-shim.8.gz" "$root/usr/bin/image-cri-shim"
}

# build_deb: cpack into $tmp/out; sets deb to the one .deb built, or exits.
build_deb() {
  local out=$tmp/out log=$tmp/cpack.log
  if ! cpack -G DEB --config "$build/CPackConfig.cmake" -B "$out" >"$log" 2>&1; then
    cat "$log" >&2
    fail "cpack"
  fi
  local debs=("$out"/*.deb)
  if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
    cat "$log" >&2
    echo "FAIL: want exactly one .deb in $out, got: ${debs[*]}" >&2
    exit 1
  fi
  deb=${debs[0]}
  pass "built $(basename "$deb")"
}

binary=$build/image-cri-shim
if [ ! -x "$binary" ]; then
  echo "FAIL: $binary is not built (cmake --build $build --target image-cri-shim)" >&2
  exit 1
fi

case $mode in
install)
  stage=$tmp/stage
  log=$tmp/install.log
  if ! DESTDIR=$stage cmake --install "$build" --prefix /usr/local >"$log" 2>&1; then
    cat "$log" >&2
    fail "cmake --install"
  fi
  bin=$stage/usr/local/bin/image-cri-shim
  unit=$stage/etc/systemd/system/image-cri-shim.service
  config=$stage/etc/image-cri-shim/config.yaml
  check "binary installed in /usr/local/bin" test -x "$bin"
  check "binary runs --version" bash -c "'$bin' --version | grep -q '^image-cri-shim '"
  check "unit installed in /etc/systemd/system" test -f "$unit"
  check "unit is deploy/systemd/image-cri-shim.service as it is" \
    cmp -s "$unit" "$src/deploy/systemd/image-cri-shim.service"
  expect_mode "$unit" 644
  expect_exec_start "$unit" /usr/local/bin/image-cri-shim
  # The state directory is systemd's to create (0700); the configuration directory stays
  # read-only for the daemon, which never writes the operator's file.
  check "unit has StateDirectory=image-cri-shim (0700)" \
    bash -c "grep -qx 'StateDirectory=image-cri-shim' '$unit' && grep -qx 'StateDirectoryMode=0700' '$unit'"
  check "unit does not make /etc/image-cri-shim writable" \
    bash -c "! grep -E '^ReadWritePaths=.*etc/image-cri-shim' '$unit'"
  check "install creates no state directory by hand" bash -c "! test -e '$stage/var/lib/image-cri-shim'"
  check "config installed" cmp -s "$config" "$src/deploy/config.yaml"
  expect_mode "$config" 600
  expect_mode "$stage/etc/image-cri-shim" 755
  expect_config_loads "$bin" "$config"
  verify_unit "$unit" "$bin" /usr/local/bin/image-cri-shim "$stage/usr/local/share/man"
  man=$stage/usr/local/share/man/man8/image-cri-shim.8
  check "manual page in /usr/local/share/man/man8" cmp -s "$man" "$src/docs/image-cri-shim.8"
  expect_mode "$man" 644
  # Nothing of the package's layout, nothing else at all.
  expected=$(printf '%s\n' etc/image-cri-shim/config.yaml etc/systemd/system/image-cri-shim.service \
    usr/local/bin/image-cri-shim usr/local/share/man/man8/image-cri-shim.8)
  got=$(cd "$stage" && find . -type f -o -type l | sed 's#^\./##' | sort)
  if [ "$got" = "$expected" ]; then pass "exactly the four files"; else fail "installed files: $got"; fi

  # An existing configuration is kept, whatever it holds and whatever its mode.
  printf 'address: https://mine.example.com\n' >"$config"
  chmod 0640 "$config"
  if ! DESTDIR=$stage cmake --install "$build" --prefix /usr/local >"$log" 2>&1; then
    cat "$log" >&2
    fail "second cmake --install"
  fi
  check "an existing config is not overwritten" grep -qx 'address: https://mine.example.com' "$config"
  expect_mode "$config" 640
  check "the install says it kept the config" grep -q "Kept existing: $config" "$log"

  # Another prefix: the unit follows the binary.
  DESTDIR=$tmp/opt cmake --install "$build" --prefix /opt/ics >"$log" 2>&1 || fail "install --prefix /opt/ics"
  check "binary in /opt/ics/bin" test -x "$tmp/opt/opt/ics/bin/image-cri-shim"
  expect_exec_start "$tmp/opt/etc/systemd/system/image-cri-shim.service" /opt/ics/bin/image-cri-shim
  ;;

deb)
  build_deb
  control=$(dpkg-deb -f "$deb")
  echo "$control"
  check "Package: image-cri-shim" grep -qx 'Package: image-cri-shim' <<<"$control"
  depends=$(dpkg-deb -f "$deb" Depends)
  for lib in libc6 'libstdc++6' libnghttp2-14 libyaml-cpp0.7 libcpp-httplib0.11 libssl3; do
    if grep -q "\(^\|, \)$lib\( \|,\|$\)" <<<"$depends"; then pass "Depends on $lib"; else fail "Depends lacks $lib: $depends"; fi
  done
  # The HTTP client is cpp-httplib's (issue 15): libcurl and its 27 libraries are gone.
  if grep -q curl <<<"$depends"; then fail "Depends still names libcurl: $depends"; else pass "no libcurl in Depends"; fi
  conffiles=$(dpkg-deb -I "$deb" conffiles 2>&1)
  if [ "$conffiles" = /etc/image-cri-shim/config.yaml ]; then
    pass "conffiles lists /etc/image-cri-shim/config.yaml"
  else
    fail "conffiles: $conffiles"
  fi
  listing=$(dpkg-deb -c "$deb")
  check "config is -rw------- root/root" \
    grep -qE '^-rw------- root/root .* \./etc/image-cri-shim/config\.yaml$' <<<"$listing"
  check "binary in /usr/bin" grep -qE '^-rwxr-xr-x root/root .* \./usr/bin/image-cri-shim$' <<<"$listing"
  check "unit in /lib/systemd/system" \
    grep -qE '^-rw-r--r-- root/root .* \./lib/systemd/system/image-cri-shim\.service$' <<<"$listing"
  for doc in usr/share/doc/image-cri-shim/copyright usr/share/doc/image-cri-shim/changelog.gz \
    usr/share/man/man8/image-cri-shim.8.gz usr/share/lintian/overrides/image-cri-shim; do
    check "$doc is -rw-r--r-- root/root" grep -qE "^-rw-r--r-- root/root .* \./${doc//./\\.}\$" <<<"$listing"
  done
  if grep -qE '\./usr/local|\./etc/systemd' <<<"$listing"; then
    fail "the package carries make-install paths: $listing"
  else
    pass "nothing under /usr/local or /etc/systemd"
  fi
  # The documents from the archive itself (dpkg -x): a machine whose dpkg.cfg.d excludes
  # /usr/share/doc or /usr/share/man (Docker's slim images) would leave them out of an install.
  contents=$tmp/contents
  dpkg-deb -x "$deb" "$contents" || fail "dpkg-deb -x"
  expect_package_docs "$deb" "$contents"

  # dpkg -i into a private root with its own database: the machine's dpkg database, files and
  # log stay untouched. --force-depends: the private root has no libc6 etc. installed (the
  # binary runs against the machine's libraries). The package has no maintainer scripts, so
  # nothing needs to run inside the root.
  root=$tmp/root
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
  touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
  dpkg_root=(dpkg --root="$root" --log="$tmp/dpkg.log" --force-depends)
  if ! "${dpkg_root[@]}" -i "$deb" >"$tmp/dpkg-i.log" 2>&1; then
    cat "$tmp/dpkg-i.log" >&2
    fail "dpkg -i into $root"
  fi
  status=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status} ${Version}\n' image-cri-shim 2>&1)
  check "dpkg says installed ($status)" grep -q '^install ok installed ' <<<"$status"
  installed_conffiles=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}\n' image-cri-shim)
  check "dpkg records the conffile" grep -qE '^ /etc/image-cri-shim/config.yaml [0-9a-f]{32}$' <<<"$installed_conffiles"
  version=$("$root/usr/bin/image-cri-shim" --version 2>&1)
  check "installed binary runs --version ($version)" grep -q '^image-cri-shim ' <<<"$version"
  expect_mode "$root/etc/image-cri-shim/config.yaml" 600
  check "installed config is the example" cmp -s "$root/etc/image-cri-shim/config.yaml" "$src/deploy/config.yaml"
  expect_exec_start "$root/lib/systemd/system/image-cri-shim.service" /usr/bin/image-cri-shim
  expect_config_loads "$root/usr/bin/image-cri-shim" "$root/etc/image-cri-shim/config.yaml"
  verify_unit "$root/lib/systemd/system/image-cri-shim.service" "$root/usr/bin/image-cri-shim" /usr/bin/image-cri-shim \
    "$contents/usr/share/man"

  # An edited conffile survives reinstalling the package; purge removes everything.
  printf 'address: https://mine.example.com\n' >"$root/etc/image-cri-shim/config.yaml"
  if ! "${dpkg_root[@]}" --force-confold -i "$deb" >"$tmp/dpkg-i.log" 2>&1; then
    cat "$tmp/dpkg-i.log" >&2
    fail "dpkg -i again"
  fi
  check "reinstalling keeps the edited conffile" \
    grep -qx 'address: https://mine.example.com' "$root/etc/image-cri-shim/config.yaml"
  if ! "${dpkg_root[@]}" -P image-cri-shim >"$tmp/dpkg-P.log" 2>&1; then
    cat "$tmp/dpkg-P.log" >&2
    fail "dpkg -P"
  fi
  left=$(cd "$root" && find . \( -type f -o -type l \) -not -path './var/lib/dpkg/*' | sort)
  if [ -z "$left" ]; then pass "purge leaves no file"; else fail "left after purge: $left"; fi
  ;;
lintian)
  # Debian's own judgement of the package. --fail-on error,warning,info: exit 2 on any error,
  # warning or info (hardening, unstripped sections) that packaging/deb/lintian-overrides does
  # not override; so does an override lintian reports unused (the tag is gone or has changed).
  if ! command -v lintian >/dev/null; then
    echo "FAIL: lintian is not installed (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
  build_deb
  # Every override has its reason: a comment line right above it.
  unexplained=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/lintian/overrides/image-cri-shim |
    awk '/^#/ {reason = 1; next} /^[[:space:]]*$/ {reason = 0; next} !reason {print} {reason = 0}')
  if [ -z "$unexplained" ]; then
    pass "every lintian override has a reason above it"
  else
    fail "lintian overrides without a reason (a # line above): $unexplained"
  fi
  # lintian says "running with root privileges is not recommended!" as root: only noise here.
  # Not --show-overrides: with it, lintian 2.116 exits 2 for the overridden tags too; the
  # overrides are printed from the file instead.
  # A sanitizer build (make test-asan) is built without the hardening flags, with which the
  # sanitizers do not mix: there lintian's hardening infos are expected, and only errors and
  # warnings count. The package is made from the plain build.
  fail_on=error,warning,info
  reported='^[EWI]: '
  if grep -qE '^SHIM_SANITIZE:[A-Z]*=.+' "$build/CMakeCache.txt" 2>/dev/null; then
    fail_on=error,warning
    reported='^[EW]: '
  fi
  lint_status=0
  lint=$(lintian --fail-on "$fail_on" --display-info "$deb" 2>&1) || lint_status=$?
  lint=$(grep -v '^running with root privileges' <<<"$lint")
  echo "lintian $(lintian --version | sed 's/^Lintian v//') on $(basename "$deb"):"
  echo "${lint:-(nothing)}"
  echo "overridden, each with its reason (packaging/deb/lintian-overrides):"
  awk 'past_header && NF {print} !NF {past_header = 1}' "$src/packaging/deb/lintian-overrides"
  if [ $lint_status -eq 0 ]; then
    pass "lintian: no error, no warning, no info (hardening and stripping included)"
  else
    fail "lintian exited $lint_status: the E:, W: and I: lines above (fix each, or override it in packaging/deb/lintian-overrides with a reason)"
  fi
  if grep -qE "$reported" <<<"$lint"; then
    fail "lintian reports errors, warnings or infos: $(grep -E "$reported" <<<"$lint")"
  fi
  if grep -qE 'unused-override|mismatched-override' <<<"$lint"; then
    fail "an override no longer matches: $(grep -E 'unused-override|mismatched-override' <<<"$lint")"
  fi
  ;;
*)
  echo "usage: $0 install|deb|lintian BUILD_DIR SOURCE_DIR" >&2
  exit 2
  ;;
esac

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
