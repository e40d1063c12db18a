#!/bin/sh
# Builds __NAME__.wasm with AssemblyScript (npm install assemblyscript; set
# ASC to its bin/asc if it is not on PATH).
set -eu
cd "$(dirname "$0")"
"${ASC:-asc}" __NAME__.ts -o __NAME__.wasm -O3 --runtime incremental \
	--exportStart _initialize --use abort=qrun/qrunAbort
