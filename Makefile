# qrun — see README.md. Targets:
#   build    bin/qrun
#   plugins  rebuild the example, conformance and test .wasm files from source
#            (plugins/install-toolchains.sh installs every guest toolchain)
#   run      qrun on config.hcl.example (disk engine in ./data, no server needed)
#   test     lint + the whole test suite with the race detector
#   bench    benchmarks, including the raw ceilings they are compared with
#   lint     gofmt + go vet
#   fuzz     the fuzzers, FUZZTIME each (default 30s)
#   soak     the long tests that `make test` skips (-short)
#   cross    build and vet (tests included) for macOS and Windows
#   screenshots  regenerate docs/console/*.png with the console's browser test
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BENCHTIME ?= 2s

.PHONY: build plugins run test bench lint check-plugins fuzz soak clean cross screenshots

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/qrun ./cmd/qrun

plugins:
	GO=$(GO) ./plugins/build.sh
	$(GO) generate ./runtime/plugin/... ./runtime/internal/... ./runtime/server/...

run: build
	./bin/qrun run -c config.hcl.example

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The race detector changes allocation counts, so the allocation guards run
# once without it, before everything runs with it.
test: lint
	$(GO) test -count=1 -run 'Alloc' ./engines/memory/ ./engines/posixmq/ ./runtime/plugin/
	$(GO) test -race -short -timeout 15m ./...

# cross builds and vets every package, test files included, for the other
# platforms qrun supports, so a Linux-only call cannot slip in unnoticed
# (posixmq and shm are Linux-only by build tags; see README "Platforms").
CROSS ?= darwin/amd64 darwin/arm64 windows/amd64
cross:
	@set -e; for p in $(CROSS); do \
		echo "cross $$p"; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build ./...; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./...; \
	done

# soak runs the long tests that -short skips.
soak:
	$(GO) test -race -run 'Soak' -timeout 30m -v ./...

# check-plugins proves the committed .wasm files are what their sources build to.
check-plugins: plugins
	git diff --exit-code --stat -- '*.wasm'

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./engines/... ./runtime/... ./plugins/...

clean:
	rm -rf bin data

# fuzz runs each fuzzer for FUZZTIME (not part of `make test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./runtime/config/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAttrs$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./runtime/plugin/
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./runtime/plugin/
	$(GO) test -run '^$$' -fuzz '^FuzzInstrument$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./runtime/internal/interrupt/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./engines/posixmq/frame/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./engines/shm/

# screenshots runs the web console's browser test (Debian's chromium) and has
# it save the main pages to docs/console/ (docs/console.md).
screenshots:
	QRUN_REQUIRE_TOOLS=1 QRUN_SCREENSHOTS=$(CURDIR)/docs/console $(GO) test -count=1 -run TestConsoleInBrowser ./runtime/admin/console/
