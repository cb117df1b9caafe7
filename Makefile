# The two commands of the README:
#   make run   - install what is missing, build, run the main job
#   make test  - install what is missing, build, run every test (normal and
#                ASan+UBSan builds)
BUILD ?= build
SAN_BUILD ?= build-san
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQW_WERROR=ON

.PHONY: all deps build build-san run test test-unit test-san test-integration bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-san: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQW_WERROR=ON -DQW_SANITIZE=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)

run: build
	@$(BUILD)/qwave demo

test-unit: build
	@ctest --test-dir $(BUILD) -L unit --output-on-failure -j$(JOBS)

test-integration: build
	@ctest --test-dir $(BUILD) -L integration --output-on-failure

test-san: build-san
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(SAN_BUILD) -L unit --output-on-failure -j$(JOBS)

test: test-unit test-integration test-san

bench: build
	@$(BUILD)/qwave bench crypto
	@$(BUILD)/qwave bench cascade
	@$(BUILD)/qwave bench pa

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
