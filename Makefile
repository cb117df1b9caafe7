# The two commands of the README:
#   make run   - install what is missing, build, run the main job
#   make test  - install what is missing, build, run every test (normal and
#                ASan+UBSan builds)
BUILD ?= build
SAN_BUILD ?= build-san
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQW_WERROR=ON

FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20

.PHONY: all deps build build-san build-fuzz run test test-unit test-san test-integration fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-san: deps
	@cmake -S . -B $(SAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQW_WERROR=ON -DQW_SANITIZE=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j$(JOBS)

# The main job: the crypto core's checks, a simulated 50 km QKD link with
# finite-key distillation, then the metro ring (four trusted nodes, five
# QKD links) delivering a key pair over ETSI GS QKD 014 between two
# applications whose nodes share no link: the keys are relayed hop by hop
# and the path they took is shown.
run: build
	@$(BUILD)/qwave demo
	@echo; $(BUILD)/qwave sim link --distance 50 --pulses 1e9
	@echo
	@QWAVE=$(CURDIR)/$(BUILD)/qwave scripts/demo-network.sh examples/metro-ring.conf sae-2 sae-4

test-unit: build
	@ctest --test-dir $(BUILD) -L unit --output-on-failure -j$(JOBS)

test-integration: build
	@ctest --test-dir $(BUILD) -L integration --output-on-failure

test-san: build-san
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(SAN_BUILD) -L unit --output-on-failure -j$(JOBS)

build-fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DQW_WERROR=ON -DQW_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

# Each libFuzzer target runs FUZZ_SECONDS on a scratch copy of its seed
# corpus; a crash, leak or sanitizer report fails the run.
fuzz: build-fuzz
	@set -e; for t in $(FUZZ_BUILD)/tests/fuzz/fuzz_*; do \
		[ -x "$$t" ] || continue; name=$$(basename $$t); \
		corpus=$$(mktemp -d); cp -r tests/fuzz/corpus/$${name#fuzz_}/. $$corpus/ 2>/dev/null || true; \
		echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
		$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $$corpus >$$corpus.log 2>&1 \
			|| { tail -40 $$corpus.log; rm -rf $$corpus $$corpus.log; exit 1; }; \
		grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs)' $$corpus.log | tail -1; \
		rm -rf $$corpus $$corpus.log; \
	done

test: test-unit test-integration test-san fuzz

bench: build
	@scripts/install-deps.sh --bench
	@$(BUILD)/qwave bench crypto
	@$(BUILD)/qwave bench cascade
	@$(BUILD)/qwave bench pa

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD)
