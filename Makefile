# refit — see README.md. Needs Go and the PostgreSQL server binaries
# (Debian: postgresql); tests and the demo start their own throwaway server.
GO       ?= go
BIN      ?= bin/refit
PKGS     ?= ./...
# `make test` must stay well inside CI's limit on a 2-core machine.
TEST_TIMEOUT ?= 20m

.PHONY: all build test test-matrix vet fmt-check demo bench fuzz chaos clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/refit

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

test: fmt-check vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 1 $(PKGS)

# The whole suite against each PostgreSQL major in turn, with the server
# builds scripts/pg-fetch pins (fetched once into its cache), one summary
# line and the wall time per version; fails if any version fails.
# MATRIX_VERSIONS="16 17" selects majors, MATRIX_PKGS packages;
# REFIT_TEST_DSN is not used here (each version's own throwaway servers).
MATRIX_VERSIONS ?= 14 15 16 17 18
MATRIX_PKGS     ?= $(PKGS)

test-matrix: fmt-check vet
	@bins=$$(scripts/pg-fetch $(MATRIX_VERSIONS)) || exit 1; \
	set -- $$bins; summary=""; failed=""; begin=$$(date +%s); \
	while [ $$# -ge 2 ]; do \
	  major=$$1; bin=$$2; shift 2; \
	  echo "=== PostgreSQL $$major: REFIT_PG_BIN=$$bin"; \
	  start=$$(date +%s); \
	  if REFIT_PG_BIN=$$bin REFIT_TEST_DSN= $(GO) test -count=1 -timeout $(TEST_TIMEOUT) -p 1 $(MATRIX_PKGS); \
	  then result=ok; else result=FAIL; failed="$$failed $$major"; fi; \
	  secs=$$(( $$(date +%s) - start )); \
	  line=$$(printf 'PostgreSQL %-2s (%s) %-4s %dm%02ds' "$$major" "$$($$bin/postgres --version | sed 's/.* //')" \
	    "$$result" $$((secs / 60)) $$((secs % 60))); \
	  echo "=== $$line"; summary="$$summary$$line;"; \
	done; \
	secs=$$(( $$(date +%s) - begin )); \
	echo "=== test-matrix ($(MATRIX_PKGS)):"; \
	printf '%s' "$$summary" | tr ';' '\n' | sed 's/^/    /'; \
	printf '    total %dm%02ds\n' $$((secs / 60)) $$((secs % 60)); \
	if [ -n "$$failed" ]; then echo "=== test-matrix: FAILED on PostgreSQL$$failed"; exit 1; fi

demo: build
	./$(BIN) demo

# Throughput, sync lag and application latency on a throwaway PostgreSQL
# (docs/benchmarks.md); BENCH_FLAGS="--rows 200000" for a quick run.
bench: build
	./$(BIN) bench $(BENCH_FLAGS)

# Each fuzz target of the migration parser and its SQL lexers for FUZZTIME
# (migration/fuzz_test.go; their seed corpora in migration/testdata/fuzz
# run with every `make test`). A failing input is written next to them.
FUZZTIME ?= 60s

fuzz:
	@for f in FuzzParse FuzzSingleExpression FuzzSplitStatements; do \
	  echo "=== $$f for $(FUZZTIME)"; \
	  $(GO) test ./migration/ -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# Proof under faults (internal/chaos, docs/safety.md): CHAOS_FAULTS seeded
# faults (SIGKILL of refit run and of worker replicas, PostgreSQL stopped with
# -m immediate and restarted, refit's backends and walsender terminated, locks
# held across DDL) over a sequence of migrations while an application writes;
# every row is checked against the application's ledger after each migration.
# CHAOS_SEED replays a run's plan (default: random, printed). `make test` runs
# a 5-fault smoke of it.
CHAOS_FAULTS ?= 50
CHAOS_SEED   ?=

chaos:
	REFIT_CHAOS_FAULTS=$(CHAOS_FAULTS) REFIT_CHAOS_SEED=$(CHAOS_SEED) $(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./internal/chaos

clean:
	rm -rf bin
