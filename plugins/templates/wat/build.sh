#!/bin/sh
# Builds __NAME__.wasm with wat2wasm (Debian or npm: wabt).
set -eu
cd "$(dirname "$0")"
"${WAT2WASM:-wat2wasm}" __NAME__.wat -o __NAME__.wasm
