# flashgate — `make run` serves the demo, `make test` runs the whole suite.
GO       ?= go
BIN      ?= bin/flashgate
DATA     ?= data
# The race detector runs over every package (most start goroutines).
RACE_PKGS = ./...

.PHONY: all build run test vet fmt-check unit race e2e fuzz-seeds bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/flashgate

run: build
	./$(BIN) serve --data $(DATA)

# The whole suite: formatting, vet, unit tests (fuzz seeds included), the
# race detector on the concurrent packages, and the end-to-end tests (a real
# server over HTTP, a SIGKILLed child process, the audit).
test: fmt-check vet unit race

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 10m ./...

race:
	$(GO) test -race -count=1 -timeout 10m -short $(RACE_PKGS)

# Benchmarks: the writer's commit path and the token issue path over HTTP.
bench: build
	$(GO) test -run XXX -bench . -benchtime 3s ./handlers/ ./tokens/ ./identity/
	./scripts/bench-http.sh

clean:
	rm -rf bin
