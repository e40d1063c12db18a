package abi

import _ "embed" // for source

//go:embed abi.go
var source string

// Source returns this package's Go source (abi.go), so that `qrun plugin
// new` can write a self-contained copy of the Go guest SDK, which imports
// this package, into a new handler's directory.
func Source() string { return source }
