#!/usr/bin/env bash
# Rebuilds every example plugin under plugins/examples from its source, in
# place, so the committed .wasm files can be checked against their sources.
#
# A missing toolchain skips that example with "skipped <example>: <tool> not
# found" instead of failing, because contributors rarely have every guest
# language installed. Set QRUN_REQUIRE_TOOLS=1 (CI) to turn any skip into a
# non-zero exit. The Go builds are reproducible (-trimpath, -buildvcs=false),
# so an unchanged source rebuilds to identical bytes with the same Go release.
#
# Usage: plugins/build.sh            (from anywhere)
#        GO=/path/to/go WAT2WASM=/path/to/wat2wasm plugins/build.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO=${GO:-go}
WAT2WASM=${WAT2WASM:-wat2wasm}
skipped=0
failed=0

have() { command -v "$1" >/dev/null 2>&1; }

skip() { # example tool
	echo "skipped $1: $2 not found" >&2
	skipped=$((skipped + 1))
}

built() { # example output
	echo "built $1 ($(wc -c <"$2" | tr -d ' ') bytes)"
}

# Go: every directory under examples/go holding a main package, built as a
# WASI reactor named after the directory. GOFLAGS is cleared so a developer's
# -mod=mod or similar cannot change the result.
for dir in "$here"/examples/go/*/; do
	[ -f "$dir/main.go" ] || continue
	name=$(basename "$dir")
	ex="examples/go/$name"
	if ! have "$GO"; then skip "$ex" go; continue; fi
	if (cd "$dir" && GOOS=wasip1 GOARCH=wasm GOFLAGS= \
		"$GO" build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-s -o "$name.wasm" .); then
		built "$ex" "$dir/$name.wasm"
	else
		echo "FAILED $ex" >&2
		failed=$((failed + 1))
	fi
done

# WAT: every examples/wat/<name>/<name>.wat.
for src in "$here"/examples/wat/*/*.wat; do
	[ -f "$src" ] || continue
	ex="examples/wat/$(basename "$(dirname "$src")")"
	if ! have "$WAT2WASM"; then skip "$ex" wat2wasm; continue; fi
	if "$WAT2WASM" "$src" -o "${src%.wat}.wasm"; then
		built "$ex" "${src%.wat}.wasm"
	else
		echo "FAILED $ex" >&2
		failed=$((failed + 1))
	fi
done

if [ "$failed" -gt 0 ]; then
	echo "$failed example(s) failed to build" >&2
	exit 1
fi
if [ "$skipped" -gt 0 ] && [ "${QRUN_REQUIRE_TOOLS:-0}" = 1 ]; then
	echo "QRUN_REQUIRE_TOOLS=1 and $skipped example(s) were skipped" >&2
	exit 1
fi
