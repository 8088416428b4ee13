# flashgate — `make run` serves the demo, `make test` runs the whole suite.
GO       ?= go
BIN      ?= bin/flashgate
DATA     ?= data
# The race detector runs over every package (most start goroutines).

.PHONY: all build run test deps vet fmt-check unit race bench bench-deps clean nats-server cluster

all: build

build:
	$(GO) build -o $(BIN) ./cmd/flashgate

run: build
	./$(BIN) serve --data $(DATA)

# The nats-server the Go module already pins (the embedded one's version),
# for a real cluster: see README "Beyond one machine".
nats-server:
	$(GO) build -o bin/nats-server github.com/nats-io/nats-server/v2

# A three-node NATS cluster on this machine (deploy/nats-cluster), for
# trying several flashgate processes; Ctrl-C stops it.
cluster: nats-server
	cd deploy/nats-cluster && trap 'kill 0' INT TERM EXIT; \
	for i in 1 2 3; do ../../bin/nats-server -c n$$i.conf & done; wait

# The whole suite: formatting, vet, unit tests (fuzz seeds included), the
# race detector on the concurrent packages, and the end-to-end tests (a real
# server over HTTP, a SIGKILLed child process, the audit).
test: deps fmt-check vet unit race

# What the tests need beyond Go: Debian's chromium for the browser tests,
# and redis-server for the test of the benchmark's Redis-Lua reference.
# Installed with apt-get when missing (as root, or through sudo); without
# them those tests skip on a developer's machine (the browser tests fail
# under CI=true).
deps: bench-deps
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		echo "installing Debian's chromium for the browser tests"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing and apt-get is not here: the browser tests will skip"; fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The browser tests check what a shopper sees against the wall clock (a
# button unlocks on time), so they run on their own, after the others: with
# every other package's tests beside them on 2 cores, chromium can starve.
BROWSER_PKG = ./web/
OTHER_PKGS  = $$($(GO) list ./... | grep -v '/web$$')

unit:
	GO=$(GO) ./scripts/gotest.sh -count=1 -timeout 10m $(OTHER_PKGS)
	GO=$(GO) ./scripts/gotest.sh -count=1 -timeout 10m $(BROWSER_PKG)

race:
	GO=$(GO) ./scripts/gotest.sh -race -count=1 -timeout 10m -short $(OTHER_PKGS)
	GO=$(GO) ./scripts/gotest.sh -race -count=1 -timeout 10m -short $(BROWSER_PKG)

# Benchmarks: the Go micro benchmarks (the writer's commit path, token
# signing, sessions, the views, a token request through the handler without
# the network), then flashgate's token issue over HTTP measured side by
# side with the Redis-Lua reference and a bare net/http handler, with the
# ratios the targets are set in (README "Benchmarks"). The table is also
# written to bin/compare.json. About 3 minutes; for the issue's full runs:
# make bench COMPARE_FLAGS="-runs 3 -duration 10s -warmup 2s".
BENCHTIME     ?= 1s
COMPARE_FLAGS ?= -runs 3 -duration 5s -warmup 1s
bench: build bench-deps
	$(GO) build -o bin/refserver ./bench/refserver
	$(GO) build -o bin/compare ./bench/compare
	$(GO) test -run XXX -bench . -benchtime $(BENCHTIME) ./handlers/ ./events/ ./tokens/ ./identity/
	$(GO) test -run XXX -bench . -benchtime 2x ./projections/
	$(GO) test -run XXX -bench . -benchtime 100000x ./app/
	./bin/compare -flashgate $(BIN) -refserver bin/refserver -json bin/compare.json $(COMPARE_FLAGS)

# What the comparison needs beyond Go: Debian's redis-server for the
# Redis-Lua reference, installed with apt-get when missing (as root, or
# through sudo).
bench-deps:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		echo "installing Debian's redis-server for the benchmark's Redis-Lua reference"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	else echo "redis-server is missing and apt-get is not here: install Redis 7, or make bench COMPARE_FLAGS=\"-servers flashgate,bare\""; fi

clean:
	rm -rf bin
