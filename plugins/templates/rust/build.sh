#!/bin/sh
# Builds __NAME__.wasm with Debian's Rust (rustc 1.63 + libstd-rust-dev-wasm32).
set -eu
cd "$(dirname "$0")"
RUSTC=${RUSTC:-/usr/bin/rustc} RUSTFLAGS="--remap-path-prefix=$(pwd)=__NAME__" \
	"${CARGO:-/usr/bin/cargo}" build --release --target wasm32-wasi --offline
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasi/release/__CRATE__.wasm" __NAME__.wasm
