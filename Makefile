# Front door. `make test` on a fresh Debian 12 machine installs, builds and runs every test.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo bench clean format install package

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
bench: build
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

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR)
