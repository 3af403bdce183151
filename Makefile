# pserver: one non-recursive GNU Makefile, out-of-tree build.
#   make            build the binaries (build/bin/ps-server, ps-worker, ps-eval,
#                   ps-keygen)
#   make run        install missing packages, build, train on Fashion-MNIST
#   make test       install missing packages, then check-all
#   make check      build and run every test (no package installation)
#   make SANITIZE=address,undefined check   sanitizer build in build-san/
#   make bench      the MLP against PyTorch (bench-mlp), the
#                   micro-benchmarks (bench-micro), the shards (bench-shards)
#   make check-all  check, then the sanitizer build's check, then fuzz-smoke
#   make fuzz       libFuzzer harnesses (clang) in build-fuzz/, each run for
#                   FUZZ_SECONDS; make fuzz-smoke runs each for 10 s
#   make lint       cppcheck and clang-tidy over common/ server/ worker/
#   make V=1        show full commands
# The project's flags live apart from CFLAGS/LDFLAGS, so `make CFLAGS=-g`
# adds to them instead of replacing them.

ifdef FUZZ
BUILD ?= build-fuzz
else ifdef SANITIZE
BUILD ?= build-san
else
BUILD ?= build
endif

CC ?= cc
CFLAGS ?= -O2 -g
LDFLAGS ?=
PKG_CONFIG ?= pkg-config

# package name -> Debian package, for the error message when one is missing
PKGS := libzmq libprotobuf-c openblas zlib ompi-c
DEB_libzmq := libzmq3-dev
DEB_libprotobuf-c := libprotobuf-c-dev
DEB_openblas := libopenblas-dev
DEB_zlib := zlib1g-dev
DEB_ompi-c := libopenmpi-dev
DEB_cmocka := libcmocka-dev

PS_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -fno-math-errno -MMD -MP \
	-Icommon -Iserver -Iworker -I$(BUILD)/gen
ifdef WERROR
PS_CFLAGS += -Werror
endif
ifdef SANITIZE
PS_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
PS_LDFLAGS += -fsanitize=$(SANITIZE)
endif
# The fuzzing build (make fuzz, with clang): the library and the harnesses
# get libFuzzer's coverage instrumentation; only the harnesses link its
# main().
ifdef FUZZ
PS_CFLAGS += -fsanitize=fuzzer-no-link
endif

# Deferred (=) so that `make test` can install packages before anything
# asks pkg-config about them.
PKG_CFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lm
CMOCKA_CFLAGS = $(shell $(PKG_CONFIG) --cflags cmocka 2>/dev/null)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)

ALL_CFLAGS = $(PS_CFLAGS) $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(PS_LDFLAGS) $(LDFLAGS)

ifeq ($(V),1)
Q :=
msg = @:
else
Q := @
msg = @printf '  %-6s %s\n' $(1) $(2)
endif

PROTOS := $(wildcard proto/*.proto)
GEN_C := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.c,$(PROTOS))
GEN_H := $(GEN_C:.c=.h)

COMMON_SRC := $(wildcard common/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
# Entry points are not library code: each links into its own binary.
WORKER_SRC := $(filter-out worker/main.c worker/eval_main.c,$(wildcard worker/*.c))
TEST_SRC := $(wildcard tests/test_ps_*.c)
# Linked into every test binary: the seams tests mock at (fake transport).
TEST_SUPPORT_SRC := tests/fake_transport.c tests/test_rmtree.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC)) $(patsubst $(BUILD)/gen/%.c,$(BUILD)/obj/gen/%.o,$(GEN_C))
SERVER_OBJ := $(call obj,$(SERVER_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
TEST_OBJ := $(call obj,$(TEST_SRC))
TEST_SUPPORT_OBJ := $(call obj,$(TEST_SUPPORT_SRC))

LIBS_A := $(BUILD)/lib/libpsserver.a $(BUILD)/lib/libpsworker.a $(BUILD)/lib/libpscommon.a
BINS := $(BUILD)/bin/ps-server $(BUILD)/bin/ps-worker $(BUILD)/bin/ps-eval \
	$(BUILD)/bin/ps-keygen
# Programs the integration tests drive (a hostile client; the synchronous
# SGD oracle the consistency tests compare the cluster with; the
# micro-benchmarks and the shard benchmark, run briefly so that they keep
# working; the MPI transport's tensor buffers and its receive of a message that
# arrived unseen, between two ranks), and the
# generator of the fuzzing seed corpora (`make fuzz-seeds`), built so that
# it keeps compiling.
TOOLS := $(BUILD)/bin/ps-badpeer $(BUILD)/bin/ps-sgd-oracle $(BUILD)/bin/ps-bench-micro \
	$(BUILD)/bin/ps-bench-shards $(BUILD)/bin/ps-fuzz-seeds $(BUILD)/bin/ps-mpi-tensors \
	$(BUILD)/bin/ps-mpi-arrival
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all deps check-deps run test check unit integration sanitize clean format
all: $(BINS)

# --- dependency checks: one clear line naming the Debian package --------
check-deps:
	@for p in $(PKGS) cmocka; do \
		$(PKG_CONFIG) --exists $$p || { \
		case $$p in libzmq) d=$(DEB_libzmq);; libprotobuf-c) d=$(DEB_libprotobuf-c);; \
		openblas) d=$(DEB_openblas);; zlib) d=$(DEB_zlib);; cmocka) d=$(DEB_cmocka);; \
		ompi-c) d=$(DEB_ompi-c);; esac; \
		echo "error: library '$$p' not found by pkg-config: install the Debian package $$d (scripts/install-deps does it)" >&2; \
		exit 1; }; done
	@command -v protoc-c >/dev/null || { echo "error: protoc-c not found: install the Debian package protobuf-c-compiler (scripts/install-deps does it)" >&2; exit 1; }

deps:
	scripts/install-deps

# --- flags stamp: changed compiler or flags rebuild everything ----------
FLAGS_NOW = $(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS)
$(BUILD)/flags: FORCE | check-deps
	@mkdir -p $(@D)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@
FORCE:

# --- generated protocol code ---------------------------------------------
.SECONDARY: $(GEN_C) $(GEN_H)
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto | check-deps
	$(call msg,PROTOC,$<)
	@mkdir -p $(@D)
	$(Q)protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c $(BUILD)/flags
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(filter-out -Wmissing-prototypes,$(ALL_CFLAGS)) -c $< -o $@

# Every object waits for the generated headers (order-only), then -MMD
# records the real header dependencies for the next build.
$(BUILD)/obj/%.o: %.c $(BUILD)/flags | $(GEN_H)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/lib/libpscommon.a: $(COMMON_OBJ)
$(BUILD)/lib/libpsserver.a: $(SERVER_OBJ)
$(BUILD)/lib/libpsworker.a: $(WORKER_OBJ)
$(LIBS_A):
	$(call msg,AR,$@)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/bin/ps-server: $(BUILD)/obj/server/main.o $(BUILD)/lib/libpsserver.a $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-worker: $(BUILD)/obj/worker/main.o $(BUILD)/lib/libpsworker.a $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-eval: $(BUILD)/obj/worker/eval_main.o $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-keygen: $(BUILD)/obj/tools/ps-keygen.o $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-badpeer: $(BUILD)/obj/tests/tools/ps-badpeer.o $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-sgd-oracle: $(BUILD)/obj/tests/tools/ps-sgd-oracle.o $(BUILD)/lib/libpsworker.a \
	$(BUILD)/lib/libpsserver.a $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-bench-micro: $(BUILD)/obj/tests/bench/ps-bench-micro.o \
	$(BUILD)/lib/libpsworker.a $(BUILD)/lib/libpsserver.a $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-bench-shards: $(BUILD)/obj/tests/bench/ps-bench-shards.o \
	$(BUILD)/lib/libpsworker.a $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-fuzz-seeds: $(BUILD)/obj/tests/fuzz/make_seeds.o $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-mpi-tensors: $(BUILD)/obj/tests/tools/ps-mpi-tensors.o $(BUILD)/lib/libpscommon.a
$(BUILD)/bin/ps-mpi-arrival: $(BUILD)/obj/tests/tools/ps-mpi-arrival.o $(BUILD)/lib/libpscommon.a
$(BINS) $(TOOLS):
	$(call msg,LINK,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS)

$(BUILD)/obj/tests/%.o: tests/%.c $(BUILD)/flags | $(GEN_H)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(CMOCKA_CFLAGS) -Itests -Wno-missing-prototypes -c $< -o $@

# Test objects are only reached through the pattern rule below; keep make
# from deleting them as intermediates (and recompiling them every time).
.SECONDARY: $(TEST_OBJ) $(TEST_SUPPORT_OBJ)
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_SUPPORT_OBJ) $(LIBS_A)
	$(call msg,LINK,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS) $(CMOCKA_LIBS)

# --- fuzzing harnesses (tests/fuzz/; docs/TESTING.md) ----------------------
# Built only in the FUZZ=1 sub-make of `make fuzz`, with clang into
# build-fuzz/: the harness objects link libFuzzer's main() and the fake
# transport (the server harness answers through it).
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
.SECONDARY: $(call obj,$(FUZZ_SRC))
$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(TEST_SUPPORT_OBJ) $(LIBS_A)
	$(call msg,LINK,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer $^ -o $@ $(ALL_LDFLAGS) $(PKG_LIBS) $(CMOCKA_LIBS)

# --- the two README jobs ---------------------------------------------------
# `make run ARGS="--workers 4 --epochs 3"` passes options to the launcher.
run: deps
	$(MAKE) --no-print-directory all
	scripts/ps-launch --build $(BUILD) $(ARGS)

test: deps
	$(MAKE) --no-print-directory check-all

check: all $(TESTS) $(TOOLS)
	scripts/run-tests --build $(BUILD)

unit: all $(TESTS)
	scripts/run-tests --build $(BUILD) --unit-only

integration: all $(TOOLS)
	scripts/run-tests --build $(BUILD) --integration-only

# `make bench`: the MLP against PyTorch, then the micro-benchmarks, then
# the shard benchmark, one after the other even under -j (each would
# disturb the other's timing).
.PHONY: bench bench-mlp bench-micro
bench:
	$(MAKE) --no-print-directory bench-mlp
	$(MAKE) --no-print-directory bench-micro
	$(MAKE) --no-print-directory bench-shards

# `make bench-mlp`: time to 0.88 test accuracy, MLP 784-256-10, 1 and 2
# workers, against PyTorch (docs/EXPERIMENTS.md); e.g. ARGS="--repeat 5
# --skip-torch". Without PyTorch (install-deps failed: not root) it runs
# the pserver side only.
bench-mlp:
	-scripts/install-deps --bench
	$(MAKE) --no-print-directory all
	scripts/bench/mlp_time_to_acc.py --build $(BUILD) $(ARGS)

# `make bench-micro`: one table of pserver's figures beside this
# machine's ceilings, measured in the same run: pull and push round trips
# and streamed pushes through pserver's stack over ZeroMQ tcp, ZeroMQ ipc
# and MPI against raw ZeroMQ and MPI, and the server's SGD and Adam apply
# against the memory bandwidth; 2 ranks under mpirun (docs/EXPERIMENTS.md,
# "Micro-benchmarks"). Table and CSV also land in runs/bench-micro-TIME/.
# MICRO_ARGS="--reps 9 --min-time 0.5". Open MPI as root (CI) and shared
# memory only, as scripts/ps-launch does. --bind-to none: the threads of
# both ranks float over the cores as those of ps-server and ps-worker do;
# mpirun would otherwise pin each rank to one core, where its ZeroMQ I/O
# thread competes with its main thread.
bench-micro: $(BUILD)/bin/ps-bench-micro
	@d=runs/bench-micro-$$(date +%Y%m%d-%H%M%S) && mkdir -p $$d && \
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	OMPI_MCA_btl=$${OMPI_MCA_btl:-self,vader} \
	timeout 900 mpirun --bind-to none -np 2 $< --out $$d $(MICRO_ARGS) \
	</dev/null

# `make bench-shards`: updates per second that 1 and 2 server shards apply
# to a 10M-weight model, and each shard's apply time (docs/EXPERIMENTS.md).
.PHONY: bench-shards
bench-shards: $(BUILD)/bin/ps-bench-shards $(BUILD)/bin/ps-server
	@d=runs/bench-shards-$$(date +%Y%m%d-%H%M%S) && mkdir -p $$d && \
	timeout 900 $< --server $(BUILD)/bin/ps-server --out $$d $(SHARDS_ARGS)

# `make check-all`: what `make test` runs after installing packages. The
# plain suite; the same suite built with AddressSanitizer and UBSan into
# build-san/, with every time bound of the tests tripled (the code runs
# 2-3x slower there, Open MPI under LeakSanitizer more); then a short run
# of every fuzzing harness (docs/TESTING.md). Stops at the first failure.
# Each build runs CHECK_JOBS compilers at once (the tests run one at a
# time whatever -j says).
CHECK_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
.PHONY: check-all check-san build-check
check-all:
	@t0=$$(date +%s); \
	$(MAKE) --no-print-directory -j$(CHECK_JOBS) build-check && \
	$(MAKE) --no-print-directory check && \
	$(MAKE) --no-print-directory check-san && \
	$(MAKE) --no-print-directory fuzz-smoke && \
	echo "check-all: passed (check, check-san, fuzz-smoke) in $$(($$(date +%s) - t0)) s"

check-san:
	@$(MAKE) --no-print-directory -j$(CHECK_JOBS) SANITIZE=address,undefined build-check
	PS_TEST_TIME_SCALE=3 $(MAKE) --no-print-directory SANITIZE=address,undefined check

# Everything `check` runs, built only.
build-check: all $(TESTS) $(TOOLS)

# --- fuzzing: `make fuzz FUZZ_SECONDS=N`, `make fuzz-smoke` ------------------
# Builds the harnesses of tests/fuzz/ with clang into build-fuzz/
# (CHECK_JOBS compilers at once) and runs each for FUZZ_SECONDS (FUZZ_JOBS
# at a time) from its seed corpus and its regression inputs; new inputs go
# to build-fuzz/corpus/, crashing ones to build-fuzz/artifacts/. Fails if
# any harness crashes.
FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_JOBS ?= 2
.PHONY: fuzz fuzz-smoke fuzz-build fuzz-bins fuzz-seeds
fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { echo "error: $(FUZZ_CC) not found: install the Debian package clang (scripts/install-deps does it)" >&2; exit 1; }
	@echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n); int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; return (int)n * 0; }' | \
		$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c - -o /dev/null 2>/dev/null || \
		{ echo "error: $(FUZZ_CC) cannot link -fsanitize=fuzzer,address,undefined: install the Debian package libclang-rt-dev (scripts/install-deps does it)" >&2; exit 1; }
	@$(MAKE) --no-print-directory -j$(CHECK_JOBS) FUZZ=1 SANITIZE=address,undefined \
		BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) fuzz-bins

fuzz-bins: $(FUZZERS)

fuzz: fuzz-build
	scripts/run-fuzz --build $(FUZZ_BUILD) --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS)

fuzz-smoke: fuzz-build
	scripts/run-fuzz --build $(FUZZ_BUILD) --seconds $(FUZZ_SMOKE_SECONDS) --jobs $(FUZZ_JOBS)

# Rewrite the seed corpora of tests/fuzz/corpus/ from the generator.
fuzz-seeds: $(BUILD)/bin/ps-fuzz-seeds
	$< tests/fuzz/corpus

# --- static analysis: `make lint` ---------------------------------------------
# cppcheck and clang-tidy (checks and why in .clang-tidy) over the library
# and the entry points, with the build's defines and include paths; fails
# on any finding. cppcheck sees our headers, the generated protocol header
# and protobuf-c's (through a link in $(BUILD)/lint/, so that it does not
# parse all of /usr/include), and is told the byte order the compilers
# predefine (ps_wire.c refuses to build without it).
LINT_SRC := $(wildcard common/*.c server/*.c worker/*.c)
CPPCHECK ?= cppcheck
CLANG_TIDY ?= clang-tidy
CPPCHECK_FLAGS = --std=c11 --platform=unix64 --enable=warning,performance,portability \
	--error-exitcode=1 --inline-suppr --quiet --suppress=missingIncludeSystem \
	-D_GNU_SOURCE -D__BYTE_ORDER__=1234 -D__ORDER_LITTLE_ENDIAN__=1234 \
	-Icommon -Iserver -Iworker -I$(BUILD)/gen -I$(BUILD)/lint
.PHONY: lint lint-tools
lint-tools:
	@command -v $(CPPCHECK) >/dev/null 2>&1 || { echo "lint: $(CPPCHECK) not found: install the Debian package cppcheck (apt-get install cppcheck)" >&2; exit 1; }
	@command -v $(CLANG_TIDY) >/dev/null 2>&1 || { echo "lint: $(CLANG_TIDY) not found: install the Debian package clang-tidy (apt-get install clang-tidy)" >&2; exit 1; }

$(BUILD)/lint/protobuf-c: | check-deps
	@mkdir -p $(@D)
	@ln -sfn "$$($(PKG_CONFIG) --variable=includedir libprotobuf-c)/protobuf-c" $@

lint: lint-tools $(GEN_H) $(BUILD)/lint/protobuf-c
	$(call msg,LINT,cppcheck)
	$(Q)$(CPPCHECK) $(CPPCHECK_FLAGS) $(LINT_SRC)
	$(call msg,LINT,clang-tidy)
	$(Q)rc=0; $(CLANG_TIDY) --quiet $(LINT_SRC) -- -std=c11 -D_GNU_SOURCE \
		-Icommon -Iserver -Iworker -I$(BUILD)/gen $(PKG_CFLAGS) \
		>$(BUILD)/lint/clang-tidy.log 2>&1 || rc=$$?; \
		grep -v 'warnings\{0,1\} generated\.$$' $(BUILD)/lint/clang-tidy.log; exit $$rc
	@echo "lint: cppcheck and clang-tidy clean ($(words $(LINT_SRC)) files)"

clean:
	rm -rf build build-san build-fuzz

format:
	clang-format -i common/*.[ch] server/*.[ch] worker/*.[ch] tools/*.c tests/*.c

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
