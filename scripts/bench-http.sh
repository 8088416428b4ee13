#!/usr/bin/env bash
# Token issue over HTTP with distinct shoppers: starts a server on a fresh data
# directory (embedded NATS, file store), races SHOPPERS shoppers for tokens with
# CONCURRENCY requests in flight, prints throughput and latency, and audits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/flashgate}
SHOPPERS=${SHOPPERS:-20000}
CONCURRENCY=${CONCURRENCY:-64}
data=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data"' EXIT
"$BIN" serve --data "$data" --http 127.0.0.1:0 --demo=false --session-rate=-1 --rate-limit=off --log-level warn >"$data/out" 2>"$data/err" &
pid=$!
for _ in $(seq 100); do grep -q "serving on" "$data/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^flashgate is serving on //p' "$data/out")
[ -n "$url" ] || { cat "$data/err"; exit 1; }
"$BIN" bench --url "$url" --data "$data" --shoppers "$SHOPPERS" --concurrency "$CONCURRENCY"
kill -TERM $pid; wait $pid || true
"$BIN" audit --data "$data" | tail -8
