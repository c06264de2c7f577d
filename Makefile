# Front door. `make test` on a fresh Debian 12 machine installs, builds and runs every test.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# ccache (installed by scripts/install-deps.sh) shares compiled objects between clones of the
# project: paths are hashed relative to the clone, so a fresh checkout rebuilds from the cache.
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1

.PHONY: all deps configure build test demo bench clean format format-check install package

all: build

deps:
	bash scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600

demo: build
	bash scripts/demo.sh $(BUILD_DIR)

# The shim against direct containerd (docs/performance.md); BENCH_ARGS e.g. --markdown FILE.
# The package is built first: its size is one of the figures.
bench: build package
	bash bench/run.sh $(BUILD_DIR) $(BENCH_ARGS)

# The binary, the systemd unit and (unless one is there) /etc/image-cri-shim/config.yaml;
# PREFIX is /usr/local unless CMAKE_FLAGS sets CMAKE_INSTALL_PREFIX; DESTDIR=dir stages it.
install: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target image-cri-shim
	DESTDIR=$(DESTDIR) cmake --install $(BUILD_DIR)

# $(BUILD_DIR)/image-cri-shim_<version>_<arch>.deb (CPack): /usr/bin, /lib/systemd/system and
# the example configuration as a conffile.
package: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target image-cri-shim
	cd $(BUILD_DIR) && cpack -G DEB

# Sanitizers (issue: reliability and security): the whole ctest suite built with
# ASan+UBSan (gcc, no recovery) or TSan, each in its own directory; the e2e tests then run the
# sanitized shim. Every report of any process fails the run (tests/sanitizers/run-ctest.sh);
# SAN_CTEST_ARGS go to ctest (e.g. -L unit).
# GCC 12 warns "may be used uninitialized" inside std::function/std::regex when sanitizers
# instrument the code (false positives): that one warning is off in these builds.
.PHONY: test-asan test-tsan fuzz
SAN_CMAKE_FLAGS = -DCMAKE_CXX_FLAGS=-Wno-maybe-uninitialized
test-asan: deps
	cmake -S . -B build-asan -DSHIM_SANITIZE=address $(SAN_CMAKE_FLAGS) $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS)
	bash tests/sanitizers/run-ctest.sh build-asan address $(SAN_CTEST_ARGS)

test-tsan: deps
	cmake -S . -B build-tsan -DSHIM_SANITIZE=thread $(SAN_CMAKE_FLAGS) $(CMAKE_FLAGS)
	cmake --build build-tsan -j $(JOBS)
	bash tests/sanitizers/run-ctest.sh build-tsan thread $(SAN_CTEST_ARGS)

# libFuzzer targets (fuzz/), built with clang, ASan and UBSan in build-fuzz, each run for
# FUZZ_SECONDS on a copy of its seed corpus; FUZZ_TARGETS picks some (default: all).
# -Werror is off there: clang may warn where gcc, the compiler of record, does not.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	bash scripts/install-deps.sh fuzz
	cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DSHIM_FUZZ=ON -DSHIM_BUILD_TESTS=OFF \
	  -DSHIM_SANITIZE=address -DSHIM_WERROR=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_targets
	bash fuzz/run.sh build-fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# One style (.clang-format) for every C++ file: `make format` applies it, `make format-check`
# (run by CI) fails on any file that deviates and names it.
format: deps
	clang-format -i $$(git ls-files '*.cc' '*.h')

format-check: deps
	clang-format --dry-run --Werror $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
