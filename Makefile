# sealmail build. `make` builds ./sealmail; `make test` runs every test under
# AddressSanitizer + UndefinedBehaviorSanitizer; `make fuzz` runs the fuzzers longer.
PKGS     := openssl libevent libevent_openssl sqlite3 libsodium libunbound
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS)) -pthread
WARN     := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wno-format-truncation
CSTD     := -std=c17 -D_GNU_SOURCE
CC       ?= cc
CFLAGS   ?= -O2 -g
ALL_CFLAGS = $(CSTD) $(WARN) -Isrc $(PKG_CFLAGS) $(CFLAGS)

SRCS     := $(sort $(shell find src -name '*.c'))
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
UNIT_SRCS := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRCS := $(sort $(wildcard tests/fuzz/fuzz_*.c))

# normal build
OBJ      := build/rel
REL_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o)

# sanitizer build used by every test
SAN      := build/san
SAN_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_OBJS := $(LIB_SRCS:%.c=$(SAN)/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(SAN)/tests/%)

# fuzzers (clang libFuzzer)
FZ       := build/fuzz
FZ_FLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined
FZ_OBJS  := $(LIB_SRCS:%.c=$(FZ)/%.o)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FZ)/%)
FUZZ_SECONDS ?= 10

PYTHON   := /usr/bin/python3

.PHONY: all test check unit e2e fuzz fuzz-quick clean deps run lint format bench
all: sealmail

sealmail: $(OBJ)/src/main.o $(OBJ)/libsealmail.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS)

$(OBJ)/libsealmail.a: $(REL_OBJS)
	@rm -f $@ && ar rcs $@ $^

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(SAN)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC san  $<"
	@$(CC) $(CSTD) $(WARN) -Isrc $(PKG_CFLAGS) $(SAN_FLAGS) -MMD -MP -c -o $@ $<

$(SAN)/libsealmail.a: $(SAN_OBJS)
	@rm -f $@ && ar rcs $@ $^

$(SAN)/sealmail: $(SAN)/src/main.o $(SAN)/libsealmail.a
	$(CC) $(SAN_FLAGS) -o $@ $^ $(PKG_LIBS)

# SCRAM-SHA-256(-PLUS) test client for tests/e2e/test_auth.py (tls-exporter needs C)
$(SAN)/tools/scram_client: tests/tools/scram_client.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(PKG_CFLAGS) $(SAN_FLAGS) -o $@ $< $(PKG_LIBS)

# other test tools (tests/tools/<name>.c), linked against the library
$(SAN)/tools/%: tests/tools/%.c $(SAN)/libsealmail.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -Isrc $(PKG_CFLAGS) $(SAN_FLAGS) -o $@ $< $(SAN)/libsealmail.a $(PKG_LIBS)

$(SAN)/tests/%: tests/unit/%.c $(SAN)/libsealmail.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -Isrc $(PKG_CFLAGS) $(SAN_FLAGS) -o $@ $< $(SAN)/libsealmail.a $(PKG_LIBS) $$(pkg-config --libs cmocka)

$(FZ)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC fuzz $<"
	@clang $(CSTD) $(WARN) -Wno-unknown-warning-option -Isrc $(PKG_CFLAGS) $(FZ_FLAGS) -MMD -MP -c -o $@ $<

$(FZ)/libsealmail.a: $(FZ_OBJS)
	@rm -f $@ && ar rcs $@ $^

$(FZ)/fuzz_%: tests/fuzz/fuzz_%.c $(FZ)/libsealmail.a
	@mkdir -p $(dir $@)
	clang $(CSTD) $(WARN) -Wno-unknown-warning-option -Isrc $(PKG_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< $(FZ)/libsealmail.a $(PKG_LIBS)

deps:
	scripts/install-deps.sh

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: $(SAN)/sealmail $(SAN)/tools/scram_client $(SAN)/tools/smtpc_probe $(SAN)/tools/dns_probe
	SEALMAIL_BIN=$(CURDIR)/$(SAN)/sealmail SCRAM_CLIENT=$(CURDIR)/$(SAN)/tools/scram_client \
	  SMTPC_PROBE=$(CURDIR)/$(SAN)/tools/smtpc_probe DNS_PROBE=$(CURDIR)/$(SAN)/tools/dns_probe $(PYTHON) -m pytest -q -x -p no:cacheprovider tests/e2e

fuzz-quick: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); mkdir -p build/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=0 build/corpus/$$n tests/fuzz/corpus/$$n 2>&1 | tail -n 2; done

fuzz:
	$(MAKE) fuzz-quick FUZZ_SECONDS=300

lint:
	scripts/lint.sh

# `make test` installs what is missing first (a fresh Debian 12 as root), then runs
# everything; `make check` runs the same without the install step.
test:
	scripts/install-deps.sh
	$(MAKE) check

check: lint unit fuzz-quick e2e
	@echo "all tests passed"

run:
	scripts/install-deps.sh
	$(MAKE) sealmail
	./sealmail serve

bench: sealmail
	$(MAKE) -C bench

format:
	clang-format -i $(SRCS) $(shell find src -name '*.h')

clean:
	rm -rf build sealmail

-include $(shell find build -name '*.d' 2>/dev/null)
