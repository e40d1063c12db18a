package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// qrun runs the command line args in process.
func qrun(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// leaf is a command of the table with its path ("qrun dlq show").
type leaf struct {
	path string
	cmd  *command
}

// leaves lists every command qrun runs, hidden ones included, and groups
// every group (qrun itself first).
func tableWalk(t *testing.T) (leaves, groups []leaf) {
	t.Helper()
	var walk func(path string, c *command)
	walk = func(path string, c *command) {
		if c.subs == nil {
			leaves = append(leaves, leaf{path, c})
			return
		}
		groups = append(groups, leaf{path, c})
		for _, s := range c.subs {
			walk(path+" "+s.name, s)
		}
	}
	root := commandTable()
	walk(root.name, root)
	if len(leaves) < 18 || len(groups) != 4 { // qrun, plugin, dlq, kv
		t.Fatalf("the table holds %d commands in %d groups; want every command of qrun", len(leaves), len(groups))
	}
	return leaves, groups
}

// flagsOfPath returns the flags the command at path defines.
func flagsOfPath(l leaf) *pflag.FlagSet {
	return flagsOf(l.cmd, strings.TrimPrefix(l.path, "qrun "))
}

// TestEveryCommandsHelpListsEveryFlag: -h, --help and qrun help COMMAND
// print the same help to stdout and exit 0 for every command, and the
// help names every flag the command defines, in every spelling.
func TestEveryCommandsHelpListsEveryFlag(t *testing.T) {
	leaves, _ := tableWalk(t)
	for _, l := range leaves {
		t.Run(l.path, func(t *testing.T) {
			args := strings.Fields(l.path)[1:]
			code, help, errs := qrun(append(slices.Clone(args), "--help")...)
			if code != exitOK || errs != "" || !strings.HasPrefix(help, "Usage: "+strings.TrimSpace(l.path+" "+l.cmd.usage)+"\n") {
				t.Fatalf("--help: exit %d, stderr %q; want exit 0 and the synopsis on stdout:\n%s", code, errs, help)
			}
			fs := flagsOfPath(l)
			n := 0
			fs.VisitAll(func(f *pflag.Flag) {
				n++
				spelling := "      --" + f.Name
				if f.Shorthand != "" {
					spelling = "  -" + f.Shorthand + ", --" + f.Name
				}
				if !strings.Contains(help, "\n"+spelling+" ") {
					t.Errorf("help lacks %q:\n%s", spelling, help)
				}
				if f.Usage != "" && !strings.Contains(help, strings.ReplaceAll(f.Usage, "`", "")) {
					t.Errorf("help lacks the usage of --%s (%q)", f.Name, f.Usage)
				}
			})
			if n < 2 && l.cmd.name != "version" {
				t.Errorf("only %d flags defined: the body did not define its flags before parsing", n)
			}
			for _, other := range [][]string{
				append(slices.Clone(args), "-h"),
				append(slices.Clone(args), "-help"),
				append([]string{"help"}, args...),
			} {
				if code, out, errs := qrun(other...); code != exitOK || out != help || errs != "" {
					t.Errorf("qrun %v: exit %d, stderr %q, stdout differs from --help:\n%s", other, code, errs, out)
				}
			}
		})
	}
}

// TestEveryGroupsHelp: qrun, qrun dlq and qrun plugin list their visible
// commands for -h, --help and help, exit 0; `qrun dlq -h` exited 2 with
// the flag package.
func TestEveryGroupsHelp(t *testing.T) {
	_, groups := tableWalk(t)
	for _, g := range groups {
		args := strings.Fields(g.path)[1:]
		for _, form := range [][]string{
			append(slices.Clone(args), "-h"),
			append(slices.Clone(args), "--help"),
			append([]string{"help"}, args...),
		} {
			code, out, errs := qrun(form...)
			if code != exitOK || errs != "" || !strings.HasPrefix(out, "Usage: "+g.path+" COMMAND") {
				t.Fatalf("qrun %v: exit %d, stderr %q; want 0 and the group's help:\n%s", form, code, errs, out)
			}
			for _, s := range g.cmd.subs {
				listed := strings.Contains(out, "\n  "+s.name+" ")
				if listed == s.hidden {
					t.Errorf("qrun %v: %s listed %v, hidden %v:\n%s", form, s.name, listed, s.hidden, out)
				}
			}
		}
	}
}

// TestSynopsesNameDefinedFlags: every flag a synopsis names is one the
// command defines, so a renamed flag cannot leave its synopsis behind.
func TestSynopsesNameDefinedFlags(t *testing.T) {
	leaves, _ := tableWalk(t)
	for _, l := range leaves {
		fs := flagsOfPath(l)
		for _, f := range flagTokens(l.cmd.usage) {
			if !defines(fs, f) {
				t.Errorf("%s: synopsis %q names %s, which the command does not define", l.path, l.cmd.usage, f)
			}
		}
	}
}

var flagToken = regexp.MustCompile(`(?:^|[\s\[(|])(--?[a-zA-Z][\w-]*)`)

// flagTokens returns the flags named in a line of usage.
func flagTokens(s string) []string {
	var out []string
	for _, m := range flagToken.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// defines says whether fs reads flag (as parseFlags would spell it).
func defines(fs *pflag.FlagSet, flag string) bool {
	name := strings.TrimLeft(flag, "-")
	return fs.Lookup(name) != nil || len(name) == 1 && fs.ShorthandLookup(name) != nil
}

// TestDocsNameDefinedFlags reads every qrun command line in README.md and
// docs/*.md (code blocks and inline code) and checks that each flag it
// shows is defined by the command it names.
func TestDocsNameDefinedFlags(t *testing.T) {
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	root := commandTable()
	inline := regexp.MustCompile("`(?:\\./bin/)?qrun ([^`]+)`")
	checked := 0
	for _, f := range append(files, "../../README.md") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		fenced := false
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "```") {
				fenced = !fenced
				continue
			}
			if fenced {
				line = strings.TrimPrefix(strings.TrimPrefix(line, "$ "), "./bin/")
				if rest, ok := strings.CutPrefix(line, "qrun "); ok {
					lines = append(lines, rest)
				}
				continue
			}
			for _, m := range inline.FindAllStringSubmatch(line, -1) {
				lines = append(lines, m[1])
			}
		}
		for _, line := range lines {
			line, _, _ = strings.Cut(line, " #")
			for _, seg := range commandSegments(root, line) {
				fs := flagsOfPath(seg.leaf)
				for _, flag := range flagTokens(seg.args) {
					checked++
					if !defines(fs, flag) {
						t.Errorf("%s: %q: %s does not define %s", filepath.Base(f), line, seg.leaf.path, flag)
					}
				}
			}
		}
	}
	if checked < 60 {
		t.Fatalf("checked only %d flags in the docs: is the extraction broken?", checked)
	}
}

// segment is one command of a usage line and its arguments.
type segment struct {
	leaf leaf
	args string
}

// commandSegments splits a usage line ("dlq list | show QUEUE [-n N] |
// ...", "pause C | qrun resume C") into the commands it shows; a part
// that names no command ("- | @file]") belongs to the one before.
func commandSegments(root *command, line string) []segment {
	var out []segment
	var group *command
	groupPath := ""
	for i, part := range strings.Split(line, " | ") {
		part = strings.TrimPrefix(part, "qrun ")
		cmd, path := root, root.name
		if group != nil && i > 0 && group.sub(firstWord(part)) != nil {
			cmd, path = group, groupPath
		}
		words := strings.Fields(part)
		k := 0
		for cmd.subs != nil && k < len(words) && cmd.sub(words[k]) != nil {
			if cmd.sub(words[k]).subs != nil {
				group, groupPath = cmd.sub(words[k]), path+" "+words[k]
			}
			cmd, path = cmd.sub(words[k]), path+" "+words[k]
			k++
		}
		switch {
		case cmd.subs == nil:
			out = append(out, segment{leaf{path, cmd}, strings.Join(words[k:], " ")})
		case len(out) > 0 && cmd == root:
			out[len(out)-1].args += " " + part
		}
	}
	return out
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// TestFlagsAnywhere: flags before or after the positional arguments, and
// before the command's name, in every spelling qrun accepted before pflag.
func TestFlagsAnywhere(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "q.hcl")
	if err := os.WriteFile(cfg, []byte("engine \"e\" { type = \"memory\" }\nqueue \"q\" { engine = \"e\" }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"validate", "-c", cfg},
		{"validate", "--config", cfg},
		{"validate", "--config=" + cfg},
		{"validate", "-c=" + cfg},
		{"validate", "-c" + cfg},
		{"validate", "--c", cfg}, // the flag package's spellings
		{"validate", "-config", cfg},
		{"validate", "-config=" + cfg},
		{"-c", cfg, "validate"}, // flags before the command
	} {
		if code, out, errs := qrun(args...); code != exitOK || !strings.Contains(out, cfg+": ok") {
			t.Errorf("qrun %q: exit %d\n%s%s", args, code, out, errs)
		}
	}

	good := "../../plugins/conformance/wat/conformance.wasm"
	for _, args := range [][]string{
		{"plugin", "check", good, "--json"}, // after the positional argument
		{"plugin", "check", "--json", good},
		{"plugin", "check", "-json", good},
		{"plugin", "--json", "check", good}, // between the names
		{"--json", "plugin", "check", good},
	} {
		code, out, errs := qrun(args...)
		var reports []struct{ OK bool }
		if err := json.Unmarshal([]byte(out), &reports); code != exitOK || err != nil || len(reports) != 1 || !reports[0].OK {
			t.Errorf("qrun %q: exit %d, want one JSON report (%v)\n%s%s", args, code, err, out, errs)
		}
	}
	// "--" ends the flags: what follows is an argument even if it looks
	// like a flag (here a file that does not exist).
	code, out, _ := qrun("plugin", "check", "--", "--json")
	if code != exitUsage || !strings.Contains(out, "--json: refused, 1 problem") {
		t.Errorf("plugin check -- --json: exit %d\n%s", code, out)
	}
}

// TestScanArgs: the spellings of the flag package are rewritten for
// pflag, and only flags are: values and arguments that look like flags
// stay as they are.
func TestScanArgs(t *testing.T) {
	fs := newFlagSet("test")
	fs.StringP("config", "c", "", "")
	fs.StringP("queue", "q", "", "")
	fs.Float64("rate", 0, "")
	fs.Bool("json", false, "")
	fs.BoolP("all", "A", false, "")
	fs.String("content-type", "", "")
	tests := []struct {
		in, want string
		kinds    []argKind
	}{
		{"-json", "--json", []argKind{argFlag}},
		{"-json=false x", "--json=false x", []argKind{argFlag, argPositional}},
		{"-content-type text/plain body", "--content-type text/plain body", []argKind{argFlag, argValue, argPositional}},
		{"--c FILE", "-c FILE", []argKind{argFlag, argValue}},
		{"--c=FILE", "-c=FILE", []argKind{argFlag, argFlag}[:1]},
		{"-c -json", "-c -json", []argKind{argFlag, argValue}}, // -json is -c's value
		{"--rate -5 -json", "--rate -5 --json", []argKind{argFlag, argValue, argFlag}},
		{"-cFILE -json", "-cFILE --json", []argKind{argFlag, argFlag}},
		{"-Ac FILE x", "-Ac FILE x", []argKind{argFlag, argValue, argPositional}}, // -A is a bool, -c takes FILE
		{"- x", "- x", []argKind{argPositional, argPositional}},
		{"-- -json", "-- -json", []argKind{argFlag, argPositional}},
		{"-frob x", "-frob x", []argKind{argFlag, argPositional}}, // pflag refuses it
		{"-q", "-q", []argKind{argFlag}},
	}
	for _, tt := range tests {
		kinds, canon := scanArgs(fs, strings.Fields(tt.in))
		if got := strings.Join(canon, " "); got != tt.want || !slices.Equal(kinds, tt.kinds) {
			t.Errorf("scanArgs(%q) = %q %v, want %q %v", tt.in, got, kinds, tt.want, tt.kinds)
		}
	}
}

// TestUsageErrors: a bad command line exits 2 with one line saying what
// is wrong and one pointing at the help of the command concerned.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args       []string
		want, help string
	}{
		{[]string{"frob"}, `unknown command "frob"`, "qrun"},
		{[]string{"dlq", "frob"}, `unknown dlq subcommand "frob"`, "qrun dlq"},
		{[]string{"dlq"}, "dlq needs a subcommand: list, show, redrive, purge", "qrun dlq"},
		{[]string{"dlq", "show", "q", "--frob"}, "unknown flag: --frob", "qrun dlq show"},
		{[]string{"dlq", "show", "-x", "q"}, `unknown shorthand flag: 'x' in -x`, "qrun dlq show"},
		{[]string{"dlq", "show", "a", "b"}, "dlq show takes one QUEUE, got 2 arguments", "qrun dlq show"},
		{[]string{"dlq", "list", "a"}, `dlq list takes no arguments, got ["a"]`, "qrun dlq list"},
		{[]string{"send", "-c", "x.hcl", "-q"}, "flag needs an argument: 'q' in -q", "qrun send"},
		{[]string{"bench", "-n", "many"}, `invalid argument "many" for "-n, --messages" flag: must be an integer`, "qrun bench"},
		{[]string{"validate", "x.hcl"}, `validate takes no arguments, got ["x.hcl"]`, "qrun validate"},
		{[]string{"validate"}, "missing -c FILE", "qrun validate"},
		{[]string{"peek"}, "peek needs one QUEUE, got 0 arguments", "qrun peek"},
		{[]string{"--frob"}, `no command among the arguments ["--frob"]`, "qrun"},
		{[]string{"version", "x"}, `version takes no arguments, got ["x"]`, "qrun version"},
	}
	for _, tt := range tests {
		code, out, errs := qrun(tt.args...)
		want := "qrun: " + tt.want + "\nRun '" + tt.help + " --help' for usage.\n"
		if code != exitUsage || out != "" || errs != want {
			t.Errorf("qrun %q: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and stderr:\n%s", tt.args, code, out, errs, want)
		}
	}
}

// TestShortFlagsHaveTheirLongNames: a shorthand means one thing across
// commands, as README.md says: -c --config, -q --queue, -a --attr, and -n
// --limit (--messages for bench).
func TestShortFlagsHaveTheirLongNames(t *testing.T) {
	want := map[string]string{"c": "config", "q": "queue", "a": "attr", "n": "limit", "h": "help"}
	leaves, _ := tableWalk(t)
	seen := map[string]bool{}
	for _, l := range leaves {
		flagsOfPath(l).VisitAll(func(f *pflag.Flag) {
			if f.Shorthand == "" {
				return
			}
			seen[f.Shorthand] = true
			w := want[f.Shorthand]
			if l.path == "qrun bench" && f.Shorthand == "n" {
				w = "messages"
			}
			if f.Name != w {
				t.Errorf("%s: -%s is --%s, want --%s", l.path, f.Shorthand, f.Name, w)
			}
		})
	}
	if len(seen) != len(want) {
		t.Errorf("shorthands in use: %v, want %v", seen, want)
	}
}
