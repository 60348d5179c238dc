# Front door: `make run` and `make test` work on a fresh Debian 12 machine (as root).
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test test-unit test-integration test-sanitize fuzz bench clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The daemon in the foreground on its embedded default config, printing each event.
run: build
	$(BUILD)/src/daemon/storwatchd --print

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 300

test-unit: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -L unit

test-integration: build
	ctest --test-dir $(BUILD) --output-on-failure -L integration

# The whole suite under ASan and UBSan (the integration tests start the sanitized storwatchd).
# Any report fails the test that triggered it; leaks are reported when a process exits.
SANITIZE_ENV = ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test-sanitize: deps
	cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSTORWATCH_SANITIZE=ON -DSTORWATCH_BENCH=OFF
	cmake --build build-sanitize -j $(JOBS)
	$(SANITIZE_ENV) ctest --test-dir build-sanitize --output-on-failure -j $(JOBS) --timeout 900

# Each libFuzzer target (every storwatch_fuzz() in fuzz/CMakeLists.txt) for FUZZ_SECONDS (clang,
# ASan, UBSan); fails naming the target and its reproducer when one finds something.
FUZZ_SECONDS ?= 60
fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTORWATCH_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS) --target fuzz_all
	./fuzz/run-all.sh build-fuzz/fuzz $(FUZZ_SECONDS)

bench: build
	@echo "benchmarks: see docs/performance.md"
	$(BUILD)/bench/bench_bus_fanout

clean:
	rm -rf $(BUILD) build-sanitize build-fuzz
