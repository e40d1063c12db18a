#!/bin/sh
# Builds __NAME__.wasm, reproducibly (the flags qrun's own examples use).
set -eu
cd "$(dirname "$0")"
GOOS=wasip1 GOARCH=wasm GOFLAGS= CGO_ENABLED=0 \
	"${GO:-go}" build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-s -o __NAME__.wasm .
