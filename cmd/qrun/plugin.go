package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/plugins"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// cmdPluginCheck runs `qrun plugin check`. Its outcome (2 for a refused
// module) is not an error in the usual sense: the report says why, and an
// exitStatus carries the code.
func cmdPluginCheck(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	asJSON := fs.Bool("json", false, "print the reports as a JSON array")
	files, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return usagef("plugin check: name at least one .wasm file")
	}
	type fileReport struct {
		File string `json:"file"`
		OK   bool   `json:"ok"`
		Size int    `json:"size"`
		*plugin.Report
	}
	var reports []fileReport
	code := exitOK
	for _, f := range files {
		wasm, err := os.ReadFile(f)
		if err != nil {
			// Reported like a problem, so the other files are still checked.
			reports = append(reports, fileReport{File: f, Report: &plugin.Report{Problems: []string{"cannot read the file: " + unwrapPath(err)}}})
			code = exitUsage
			continue
		}
		rep, err := plugin.Check(context.Background(), wasm)
		if rep == nil { // only when the checker itself failed, not the module
			return fmt.Errorf("plugin check: %s: %w", f, err)
		}
		if len(rep.Problems) > 0 {
			code = exitUsage
		}
		reports = append(reports, fileReport{File: f, OK: len(rep.Problems) == 0, Size: len(wasm), Report: rep})
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(reports); err != nil {
			return fmt.Errorf("plugin check: %w", err)
		}
	} else {
		for i, r := range reports {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			writeReport(stdout, r.File, r.Size, r.Report)
		}
	}
	if code != exitOK {
		return exitStatus(code)
	}
	return nil
}

// unwrapPath drops the *PathError prefix, since the file name is printed
// beside it already.
func unwrapPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// writeReport prints a report in plain words: the verdict first, then every
// problem, then what the module declares.
func writeReport(w io.Writer, file string, size int, r *plugin.Report) {
	switch n := len(r.Problems); n {
	case 0:
		fmt.Fprintf(w, "%s: ok\n", file)
	case 1:
		fmt.Fprintf(w, "%s: refused, 1 problem:\n", file)
	default:
		fmt.Fprintf(w, "%s: refused, %d problems:\n", file, n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
	if r.Digest == "" { // unreadable: nothing else is known
		return
	}
	row := func(k, v string) { fmt.Fprintf(w, "  %-9s %s\n", k, v) }
	switch {
	case r.ABIVersion != 0:
		row("abi", "v"+strconv.Itoa(r.ABIVersion))
	case len(r.ABIVersions) > 0:
		row("abi", "declares "+versions(r.ABIVersions)+", none supported")
	default:
		row("abi", "none declared")
	}
	row("size", strconv.Itoa(size)+" bytes, sha256 "+r.Digest)

	var wasi, qrunFuncs, other []string
	for _, im := range r.Imports {
		switch im.Module {
		case "wasi_snapshot_preview1":
			if !slices.Contains(wasi, im.Name) { // a module may import one twice
				wasi = append(wasi, im.Name)
			}
		case "qrun":
			qrunFuncs = append(qrunFuncs, im.Name)
		default:
			other = append(other, im.Module+"."+im.Name)
		}
	}
	if r.WASI {
		row("wasi", "yes, "+strings.Join(wasi, ", ")+" (qrun grants no files, environment or network)")
	} else {
		row("wasi", "no")
	}
	row("memory", memoryLine(r))
	names := make([]string, len(r.Exports))
	for i, e := range r.Exports {
		names[i] = e.Name + " " + e.Signature
	}
	row("exports", listOrNone(names))
	row("imports", "qrun: "+listOrNone(qrunFuncs))
	if len(other) > 0 {
		row("", "other: "+strings.Join(other, ", "))
	}
}

func versions(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = "v" + strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func memoryLine(r *plugin.Report) string {
	s := "min " + sizeString(r.MemoryMinBytes)
	if r.MemoryMaxBytes > 0 {
		s += ", max " + sizeString(r.MemoryMaxBytes)
	} else {
		s += ", no max (the consumer's memory_limit caps it)"
	}
	return s
}

// sizeString renders n bytes of wasm memory with its page count.
func sizeString(n uint64) string {
	const page = 65536
	var s string
	switch {
	case n >= 1<<20:
		s = strconv.FormatFloat(float64(n)/(1<<20), 'f', -1, 64)
		if i := strings.IndexByte(s, '.'); i >= 0 && len(s) > i+3 {
			s = s[:i+3]
		}
		s += " MiB"
	default:
		s = strconv.FormatUint(n>>10, 10) + " KiB"
	}
	if n/page == 1 {
		return s + " (1 page)"
	}
	return fmt.Sprintf("%s (%d pages)", s, n/page)
}

// cmdPluginNew runs `qrun plugin new`.
func cmdPluginNew(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	lang := fs.String("lang", "", "handler `language`: "+strings.Join(plugins.Languages(), ", "))
	dir := fs.String("dir", "", "`directory` to create (default ./NAME)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *lang == "":
		return usagef("plugin new: missing --lang LANG (%s)", strings.Join(plugins.Languages(), ", "))
	case len(pos) != 1:
		return usagef("plugin new takes one NAME, got %d arguments", len(pos))
	}
	name := pos[0]
	if *dir == "" {
		*dir = name
	}
	files, err := plugins.Scaffold(*dir, *lang, name)
	if err != nil {
		return usageError{fmt.Errorf("plugin new: %w", err)}
	}
	fmt.Fprintf(stdout, "created %s handler %q in %s:\n", *lang, name, *dir)
	for _, f := range files {
		fmt.Fprintf(stdout, "  %s\n", filepath.Join(*dir, filepath.FromSlash(f)))
	}
	fmt.Fprintf(stdout, "\nNext:\n  %s\n  qrun plugin check %s\n",
		filepath.Join(*dir, "build.sh"), filepath.Join(*dir, name+".wasm"))
	return nil
}

// cmdPluginPrecompile is the child half of plugin.ChildPrecompiler: it
// compiles the module on stdin into the compilation cache at low priority
// and exits. It is not in the usage text: qrun runs it, people do not.
func cmdPluginPrecompile(fs *pflag.FlagSet, args []string, stdin io.Reader, stderr io.Writer) error {
	cache := fs.String("cache", "", "compilation cache `directory`")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *cache == "" {
		return usagef("plugin precompile: missing --cache DIR")
	}
	return plugin.PrecompileChild(context.Background(), *cache, stdin)
}
