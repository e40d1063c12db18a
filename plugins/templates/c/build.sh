#!/bin/sh
# Builds __NAME__.wasm with clang and wasi-libc (Debian: clang lld wasi-libc
# libclang-rt-14-dev-wasm32), as a WASI reactor.
set -eu
cd "$(dirname "$0")"
"${CLANG:-clang}" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra \
	-ffile-prefix-map="$(pwd)"=__NAME__ -Wl,--strip-all -o __NAME__.wasm __NAME__.c
