package interrupt

// The test modules are WAT sources compiled to committed .wasm files, so the
// tests run without wabt; TestCommittedWasmMatchesWat keeps the two in step.
//go:generate make -s -C testdata
