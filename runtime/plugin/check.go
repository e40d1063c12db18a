package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/qrun-dev/qrun/abi"
	"github.com/qrun-dev/qrun/runtime/internal/interrupt"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// wasiModule is the import module name of WASI preview 1.
const wasiModule = wasi_snapshot_preview1.ModuleName

// pageSize is the WebAssembly page size.
const pageSize = 65536

// sig is a function signature, used both to build the host module and to
// check a guest's imports and exports against the ABI.
type sig struct {
	params, results []api.ValueType
}

// String formats the signature as (params)->results.
func (s sig) String() string { return formatSig(s.params, s.results) }

func (s sig) matches(params, results []api.ValueType) bool {
	return slices.Equal(s.params, params) && slices.Equal(s.results, results)
}

func formatSig(params, results []api.ValueType) string {
	list := func(ts []api.ValueType) string {
		names := make([]string, len(ts))
		for i, t := range ts {
			names[i] = api.ValueTypeName(t)
		}
		return strings.Join(names, ",")
	}
	res := list(results)
	if len(results) != 1 {
		res = "(" + res + ")"
	}
	return "(" + list(params) + ")->" + res
}

// exportSig is one guest export the ABI defines.
type exportSig struct {
	name     string
	sig      sig
	required bool
}

// guestExports returns the function exports of ABI v1 (ABI.md section 2),
// the version marker excepted.
func guestExports() []exportSig {
	return []exportSig{
		{abi.ExportAlloc, sig{[]api.ValueType{i32}, []api.ValueType{i32}}, true},
		{abi.ExportHandle, sig{[]api.ValueType{i32, i32}, []api.ValueType{i32}}, true},
		{abi.ExportInitialize, sig{nil, nil}, false},
		{abi.ExportInit, sig{nil, []api.ValueType{i32}}, false},
		{abi.ExportFree, sig{[]api.ValueType{i32, i32}, nil}, false},
	}
}

// supportedVersions are the ABI versions this host implements, ascending.
func supportedVersions() []int { return []int{abi.Version} }

// Report is the static description of a module that `qrun validate` and
// `qrun plugin check` print: what it declares and why qrun would refuse it.
type Report struct {
	// Digest is the hex SHA-256 of the module bytes (Plugin.Digest).
	Digest string `json:"sha256"`
	// ABIVersions are the versions the module declares via qrun_abi_v<N>.
	ABIVersions []int `json:"abi_versions"`
	// ABIVersion is the version this host would speak with it; 0 if none.
	ABIVersion int `json:"abi_version"`
	// Exports are the exported functions, sorted by name.
	Exports []Func `json:"exports"`
	// Imports are the imported functions in declaration order.
	Imports []Import `json:"imports"`
	// WASI reports whether the module imports wasi_snapshot_preview1.
	WASI bool `json:"wasi"`
	// MemoryMinBytes is the declared initial size of the exported memory.
	MemoryMinBytes uint64 `json:"memory_min_bytes"`
	// MemoryMaxBytes is the declared maximum; 0 when the module declares none.
	MemoryMaxBytes uint64 `json:"memory_max_bytes"`
	// Problems lists every reason the module would be refused; empty means
	// qrun accepts it (memory_limit aside, which depends on the consumer).
	Problems []string `json:"problems"`
}

// Func is an exported function.
type Func struct {
	Name      string `json:"name"`
	Signature string `json:"signature"` // e.g. "(i32,i32)->i32"
}

// Import is an imported function.
type Import struct {
	Module    string `json:"module"`
	Name      string `json:"name"`
	Signature string `json:"signature"`
}

// Check inspects wasm without running any of it. It always returns a
// non-nil Report; the error is a *ValidationError carrying the same Problems
// when the module would be refused, so callers may use either.
func Check(ctx context.Context, wasm []byte) (*Report, error) {
	// The interpreter only validates and translates, which is cheaper than
	// native compilation for a one-off inspection of a large guest.
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	wasiFuncs, err := wasiSignatures(ctx, r)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(wasm)
	rep := &Report{Digest: hex.EncodeToString(sum[:])}
	if len(wasm) == 0 {
		// wazero would say "invalid magic number", which sends an
		// operator looking for a corrupt build rather than a failed copy.
		rep.Problems = append(rep.Problems, "the file is empty (0 bytes), not a compiled WebAssembly module")
		return rep, &ValidationError{Problems: rep.Problems}
	}
	cm, err := r.CompileModule(ctx, wasm)
	if err != nil {
		rep.Problems = append(rep.Problems, "not a valid WebAssembly module: "+err.Error())
		return rep, &ValidationError{Problems: rep.Problems}
	}
	defer cm.Close(ctx)
	inspect(cm, wasm, wasiFuncs, rep)
	if _, err := interrupt.Instrument(wasm); err != nil {
		rep.Problems = append(rep.Problems, "cannot be made stoppable: "+err.Error())
	}
	if len(rep.Problems) > 0 {
		return rep, &ValidationError{Problems: rep.Problems}
	}
	return rep, nil
}

// wasiSignatures lists what wazero's WASI implementation exports, so that an
// import of a WASI function wazero lacks is caught at load, not at the first
// instance.
func wasiSignatures(ctx context.Context, r wazero.Runtime) (map[string]sig, error) {
	if r.Module(wasiModule) == nil {
		if _, err := wasi_snapshot_preview1.Instantiate(ctx, r); err != nil {
			return nil, fmt.Errorf("plugin: instantiating WASI: %w", err)
		}
	}
	m := r.Module(wasiModule)
	out := make(map[string]sig)
	for name, def := range m.ExportedFunctionDefinitions() {
		out[name] = sig{def.ParamTypes(), def.ResultTypes()}
	}
	return out, nil
}

// inspect fills rep from a compiled module and its bytes, and appends every
// ABI problem.
func inspect(cm wazero.CompiledModule, wasm []byte, wasiFuncs map[string]sig, rep *Report) {
	host := make(map[string]sig)
	for name, f := range hostFuncs() {
		host[name] = f.sig
	}
	for _, def := range cm.ImportedFunctions() {
		mod, name, _ := def.Import()
		got := formatSig(def.ParamTypes(), def.ResultTypes())
		rep.Imports = append(rep.Imports, Import{Module: mod, Name: name, Signature: got})
		var want map[string]sig
		switch mod {
		case abi.ImportModule:
			want = host
		case wasiModule:
			rep.WASI = true
			want = wasiFuncs
		default:
			p := fmt.Sprintf("unknown import %s.%s (qrun provides only modules %q and %q)", mod, name, abi.ImportModule, wasiModule)
			if mod == "env" && name == "abort" {
				// AssemblyScript's default abort: the commonest first mistake.
				p += "; AssemblyScript imports env.abort unless built with --use abort=<path to the SDK>/qrun/qrunAbort"
			}
			rep.Problems = append(rep.Problems, p)
			continue
		}
		s, ok := want[name]
		if !ok {
			rep.Problems = append(rep.Problems, fmt.Sprintf("unknown import %s.%s", mod, name))
			continue
		}
		if !s.matches(def.ParamTypes(), def.ResultTypes()) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s.%s has signature %s, want %s", mod, name, got, s))
		}
	}
	for _, def := range cm.ImportedMemories() {
		mod, name, _ := def.Import()
		rep.Problems = append(rep.Problems, fmt.Sprintf(
			"imports memory %s.%s; the module must define and export its own memory", mod, name))
	}
	// Globals, tables and tags are invisible in cm; nothing provides them,
	// so without this such a module would load and then fail every
	// instantiation.
	for _, im := range scanImports(wasm) {
		if p := importProblem(im); p != "" {
			rep.Problems = append(rep.Problems, p)
		}
	}

	exports := cm.ExportedFunctions()
	names := make([]string, 0, len(exports))
	for name := range exports {
		if !strings.HasPrefix(name, interrupt.ReservedPrefix) { // added by the instrumentation
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		def := exports[name]
		rep.Exports = append(rep.Exports, Func{Name: name, Signature: formatSig(def.ParamTypes(), def.ResultTypes())})
		rest, ok := strings.CutPrefix(name, abi.VersionExportPrefix)
		if !ok {
			continue
		}
		v, err := strconv.Atoi(rest)
		if err != nil || v <= 0 || strconv.Itoa(v) != rest {
			rep.Problems = append(rep.Problems, fmt.Sprintf("export %q looks like a version marker but %q is not a version number", name, rest))
			continue
		}
		if len(def.ParamTypes())+len(def.ResultTypes()) != 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("export %q has signature %s, want ()->()", name, formatSig(def.ParamTypes(), def.ResultTypes())))
		}
		rep.ABIVersions = append(rep.ABIVersions, v)
	}
	sort.Ints(rep.ABIVersions)
	supported := supportedVersions()
	for _, v := range rep.ABIVersions {
		for _, s := range supported {
			if v == s && v > rep.ABIVersion {
				rep.ABIVersion = v
			}
		}
	}
	if rep.ABIVersion == 0 {
		if len(rep.ABIVersions) == 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("missing export %q (the module declares no qrun ABI version)", abi.VersionExportPrefix+strconv.Itoa(abi.Version)))
		} else {
			rep.Problems = append(rep.Problems, fmt.Sprintf("module speaks ABI %s; this qrun supports %s", versionList(rep.ABIVersions), versionList(supported)))
		}
	}
	for _, e := range guestExports() {
		def, ok := exports[e.name]
		if !ok {
			if e.required {
				rep.Problems = append(rep.Problems, fmt.Sprintf("missing export %q", e.name))
			}
			continue
		}
		if !e.sig.matches(def.ParamTypes(), def.ResultTypes()) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("export %q has signature %s, want %s",
				e.name, formatSig(def.ParamTypes(), def.ResultTypes()), e.sig))
		}
	}

	mem, ok := cm.ExportedMemories()[abi.ExportMemory]
	if !ok {
		rep.Problems = append(rep.Problems, fmt.Sprintf("missing export %q (the module must export its linear memory)", abi.ExportMemory))
		return
	}
	rep.MemoryMinBytes = uint64(mem.Min()) * pageSize
	if max, ok := mem.Max(); ok {
		rep.MemoryMaxBytes = uint64(max) * pageSize
	}
}

func versionList(vs []int) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = "v" + strconv.Itoa(v)
	}
	return strings.Join(parts, ", ")
}

// formatBytes renders a size the way memory_limit is written in config.
func formatBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatUint(n>>30, 10) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatUint(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatUint(n>>10, 10) + " KiB"
	}
	return strconv.FormatUint(n, 10) + " bytes"
}
