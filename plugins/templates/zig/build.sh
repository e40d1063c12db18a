#!/bin/sh
# Builds __NAME__.wasm with Zig 0.11 (set ZIG if zig is not on PATH).
set -eu
cd "$(dirname "$0")"
"${ZIG:-zig}" build-lib -target wasm32-freestanding -dynamic -rdynamic -O ReleaseSmall -fstrip \
	--mod qrun::qrun.zig --deps qrun __NAME__.zig -femit-bin=__NAME__.wasm
rm -f __NAME__.wasm.o
