#!/usr/bin/env bash
# Runs `go test` with the given arguments and keeps its whole output; when a
# test fails, it repeats what failed at the very end (the failing tests, the
# panic and the tests that were running at a timeout), where a CI page that
# shows only the tail of the log still shows it.
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"${GO:-go}" test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" != 0 ]; then
	echo
	echo "==== what failed: go test $* ===="
	grep -E -A8 '^(panic: |--- FAIL|FAIL|[[:space:]]+--- FAIL)|running tests:' "$log" |
		grep -v -E '^[[:space:]]*$|^goroutine |^--$' | head -120
fi
exit "$rc"
