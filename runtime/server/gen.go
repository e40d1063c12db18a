package server

// The reload and shutdown tests use WAT modules compiled to committed .wasm
// files, so they run without wabt.
//go:generate make -s -C testdata
