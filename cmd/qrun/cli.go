package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

// The command line: a small table of commands (commandTable) over
// github.com/spf13/pflag. Each command's body defines its flags on the
// FlagSet it is given and then calls parseFlags before it does anything
// else; help and usage are generated from those definitions, so they
// cannot drift from what the command accepts. Running a body with
// --help is therefore side-effect free, and it is how qrun learns a
// command's flags without running it (flagsOf).
//
// cobra was considered: it would add a dependency for what is here a
// table and a few functions, and it wants each command rewritten around
// its own Command type, while these bodies stay as they were.

// command is one entry of the command table: a command qrun runs, or a
// group of subcommands (dlq, plugin).
type command struct {
	name string
	// usage follows the command's path in its synopsis: the flags it
	// cannot do without, "[flags]" and its positional arguments.
	usage   string
	summary string // one line, in the parent's list of commands
	help    string // what the command does, shown by COMMAND --help
	notes   string // what --help says last
	hidden  bool   // run by qrun itself, not by people: left out of lists
	subs    []*command
	run     func(e *env) error // nil for a group
}

// env is one invocation of a command: the flag set its body defines its
// flags on, the arguments to parse with them, and the process's streams.
type env struct {
	fs             *pflag.FlagSet
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// errHelp is returned by parseFlags when -h or --help is on the line; the
// dispatcher prints the command's help to stdout and exits 0.
var errHelp = errors.New("help requested")

// sub returns g's subcommand called name, or nil.
func (g *command) sub(name string) *command {
	for _, s := range g.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// visible lists g's subcommands that people run.
func (g *command) visible() []*command {
	var out []*command
	for _, s := range g.subs {
		if !s.hidden {
			out = append(out, s)
		}
	}
	return out
}

// newFlagSet returns the flag set a command's body defines its flags on,
// with -h/--help already defined so that it is listed like the others.
// pflag prints nothing itself: errors and help go through the dispatcher.
func newFlagSet(path string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(path, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.BoolP("help", "h", false, "show this help and exit")
	return fs
}

// parseFlags parses args with the flags the command defined on fs, before
// or after the positional arguments, and returns the positional ones. The
// spellings the standard flag package accepted (-json, -content-type x,
// --c FILE) are read as pflag's (--json, --content-type x, -c FILE). It
// returns errHelp for -h/--help and a usageError for a flag it refuses.
func parseFlags(fs *pflag.FlagSet, args []string) ([]string, error) {
	_, canon := scanArgs(fs, args)
	if err := fs.Parse(canon); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, errHelp
		}
		return nil, usageError{err}
	}
	if help, _ := fs.GetBool("help"); help {
		return nil, errHelp
	}
	return fs.Args(), nil
}

// parseNoArgs is parseFlags for a command that takes flags only.
func parseNoArgs(fs *pflag.FlagSet, args []string) error {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("%s takes no arguments, got %q", fs.Name(), pos)
	}
	return nil
}

// argKind is what one command-line argument is to a flag set.
type argKind uint8

const (
	argPositional argKind = iota
	argFlag               // a flag, or the "--" that ends them
	argValue              // the value of the flag before it
)

// scanArgs reads args as pflag will with fs's flags, saying what each one
// is, and returns them in the spelling pflag understands: a single-dash
// long flag (-json, -log-level=debug), which the standard flag package
// took, gets its second dash, and a double-dash shorthand (--c FILE) loses
// one. It mirrors pflag's rules for which flag takes the next argument as
// its value, so that a value that looks like a flag (--rate -5, -a -x=1)
// is left alone. Unknown flags are left for pflag to refuse.
func scanArgs(fs *pflag.FlagSet, args []string) ([]argKind, []string) {
	kinds := make([]argKind, len(args))
	canon := slices.Clone(args)
	for i := 0; i < len(args); i++ {
		s := args[i]
		if s == "--" {
			kinds[i] = argFlag
			break // the rest are positional, as they are to pflag
		}
		if len(s) < 2 || s[0] != '-' {
			continue // argPositional, "-" included (send reads stdin)
		}
		kinds[i] = argFlag
		var f *pflag.Flag
		inline := false // the value is in this argument
		if strings.HasPrefix(s, "--") {
			name, _, hasValue := strings.Cut(s[2:], "=")
			f, inline = fs.Lookup(name), hasValue
			if f == nil && len(name) == 1 {
				if f = fs.ShorthandLookup(name); f != nil {
					canon[i] = s[1:]
				}
			}
		} else {
			if name, _, hasValue := strings.Cut(s[1:], "="); len(name) > 1 {
				if f = fs.Lookup(name); f != nil {
					canon[i], inline = "-"+s, hasValue
				}
			}
			if f == nil {
				f, inline = shorthands(fs, s[1:])
			}
		}
		if f != nil && !inline && f.NoOptDefVal == "" && i+1 < len(args) {
			i++
			kinds[i] = argValue
		}
	}
	return kinds, canon
}

// shorthands reads a group of shorthand flags ("-n5", "-c=FILE", "-c")
// as pflag does and returns the flag whose value may be the next
// argument: the last one, unless its value is in the group (inline).
func shorthands(fs *pflag.FlagSet, group string) (f *pflag.Flag, inline bool) {
	for len(group) > 0 {
		if f = fs.ShorthandLookup(group[:1]); f == nil {
			return nil, true // pflag refuses it
		}
		switch {
		case len(group) > 2 && group[1] == '=':
			return f, true
		case f.NoOptDefVal != "": // a bool: the group may go on
			group = group[1:]
		case len(group) > 1:
			return f, true
		default:
			return f, false
		}
	}
	return nil, true
}

// invocation is what the dispatcher found on the command line: the
// command to run, its path ("qrun dlq show") and the arguments left for
// its flags and positional arguments.
type invocation struct {
	cmd  *command
	path string
	args []string
}

// flagsOf returns the flags cmd defines, by running its body with --help
// (bodies parse before they act, so this does nothing else).
func flagsOf(cmd *command, path string) *pflag.FlagSet {
	e := &env{fs: newFlagSet(path), args: []string{"--help"}, stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	_ = cmd.run(e)
	return e.fs
}

// resolve finds the command args name. Names come first as a rule
// ("qrun dlq show QUEUE -c FILE"); flags before a name ("qrun -c FILE
// validate", "qrun dlq --json list") are taken when the command found
// after them defines them all. A group named without a command, or with
// -h/--help only, comes back as the invocation.
func resolve(root *command, args []string) (invocation, error) {
	inv := invocation{cmd: root, path: root.name}
	i := 0
	for ; inv.cmd.subs != nil && i < len(args); i++ {
		a := args[i]
		if s := inv.cmd.sub(a); s != nil {
			inv.cmd, inv.path = s, inv.path+" "+a
			continue
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return inv, usagef("unknown %scommand %q", groupWord(inv.path), a)
		}
		leaf, names := locate(inv.cmd, args, i, i, nil)
		if leaf == nil {
			if slices.ContainsFunc(args[i:], isHelpFlag) {
				inv.args = []string{"--help"}
				return inv, nil
			}
			return inv, usagef("no %scommand among the arguments %q", groupWord(inv.path), args[i:])
		}
		inv.cmd = leaf
		for k := i; k < len(args); k++ {
			if slices.Contains(names, k) {
				inv.path += " " + args[k]
			} else {
				inv.args = append(inv.args, args[k])
			}
		}
		return inv, nil
	}
	inv.args = args[i:]
	return inv, nil
}

// groupWord names the group in an error: "dlq sub" for "qrun dlq", "" for
// qrun itself.
func groupWord(path string) string {
	if g, ok := strings.CutPrefix(path, "qrun "); ok {
		return g + " sub"
	}
	return ""
}

// locate searches args from index from for the names of a subcommand of
// g (and of its subcommands, for a group), after flags that begin at
// start; names holds the indexes of the names found above g. It returns
// the command and the indexes of its names, or nil.
func locate(g *command, args []string, start, from int, names []int) (*command, []int) {
	for j := from; j < len(args); j++ {
		if args[j] == "--" {
			return nil, nil
		}
		s := g.sub(args[j])
		if s == nil || strings.HasPrefix(args[j], "-") {
			continue
		}
		ns := append(slices.Clip(names), j)
		if s.subs != nil {
			if leaf, got := locate(s, args, start, j+1, ns); leaf != nil {
				return leaf, got
			}
			continue
		}
		if onlyFlagsBefore(flagsOf(s, s.name), args[start:], start, ns) {
			return s, ns
		}
	}
	return nil, nil
}

// onlyFlagsBefore says whether, read with fs, every argument before the
// last name is a flag or a flag's value and every name is positional
// (no flag took it as its value). args begins at index start of the line.
func onlyFlagsBefore(fs *pflag.FlagSet, args []string, start int, names []int) bool {
	kinds, _ := scanArgs(fs, args)
	for k := 0; k <= names[len(names)-1]-start; k++ {
		if slices.Contains(names, k+start) != (kinds[k] == argPositional) {
			return false
		}
	}
	return true
}

func isHelpFlag(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// writeHelp prints a command's help: its synopsis, what it does, and its
// flags as fs defines them (nil for a group), or a group's commands.
func writeHelp(w io.Writer, path string, cmd *command, fs *pflag.FlagSet) {
	if cmd.subs != nil {
		fmt.Fprintf(w, "Usage: %s COMMAND [flags] [arguments]\n", path)
	} else {
		fmt.Fprintf(w, "Usage: %s\n", strings.TrimSpace(path+" "+cmd.usage))
	}
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.help))
	} else if cmd.summary != "" {
		fmt.Fprintf(w, "\n%s.\n", upperFirst(cmd.summary))
	}
	if cmd.subs != nil {
		fmt.Fprintf(w, "\nCommands:\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range cmd.visible() {
			fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for a command's arguments and flags.\n", path)
	} else {
		fmt.Fprintf(w, "\nFlags:\n%s\nFlags may come before or after the arguments.\n", flagUsages(fs))
	}
	if cmd.notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.notes))
	}
}

// flagUsages lists fs's flags, one a line: spellings, value name, usage
// and default. pflag's own listing writes every bool as --x[=true|false].
func flagUsages(fs *pflag.FlagSet) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 3, ' ', 0)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		left := "      --" + f.Name
		if f.Shorthand != "" {
			left = "  -" + f.Shorthand + ", --" + f.Name
		}
		name, usage := pflag.UnquoteUsage(f)
		if name != "" && f.NoOptDefVal == "" {
			left += " " + name
		}
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			if f.Value.Type() == "string" {
				usage += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				usage += " (default " + f.DefValue + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", left, usage)
	})
	_ = tw.Flush()
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
