# refit — see README.md. Needs Go and the PostgreSQL server binaries
# (Debian: postgresql); tests and the demo start their own throwaway server.
GO       ?= go
BIN      ?= bin/refit
PKGS     ?= ./...
# `make test` must stay well inside CI's limit on a 2-core machine.
TEST_TIMEOUT ?= 20m

.PHONY: all build test vet fmt-check demo bench clean

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

demo: build
	./$(BIN) demo

# Throughput, sync lag and application latency on a throwaway PostgreSQL
# (docs/benchmarks.md); BENCH_FLAGS="--rows 200000" for a quick run.
bench: build
	./$(BIN) bench $(BENCH_FLAGS)

clean:
	rm -rf bin
