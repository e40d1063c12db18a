package config

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// hostileFiles are inputs an acceptance run fed qrun (issue 12 items 10
// and 11), and their relatives: each must give a bounded handful of
// diagnostics, every one with a position, and never crash.
func hostileFiles() []struct {
	name    string
	src     []byte
	summary string // the first diagnostic's summary, when known
} {
	rnd := func(n int) []byte {
		r := rand.New(rand.NewPCG(1, 2))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		return b
	}
	// printable is random text the UTF-8 and NUL checks let through, so
	// the parser itself has to cope with it.
	printable := func(n int) []byte {
		r := rand.New(rand.NewPCG(3, 4))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(32 + r.UintN(95))
			if r.UintN(40) == 0 {
				b[i] = '\n'
			}
		}
		return b
	}
	rep := func(s string, n int) []byte { return []byte(strings.Repeat(s, n)) }
	return []struct {
		name    string
		src     []byte
		summary string
	}{
		{"200000 [", append([]byte("x = "), rep("[", 200000)...), "Nesting too deep"},
		{"200000 (", append([]byte("x = "), rep("(", 200000)...), "Nesting too deep"},
		{"100000 {", rep("{", 100000), "Nesting too deep"},
		{"interpolations", append([]byte("x = "), rep(`"${`, 100000)...), "Nesting too deep"},
		{"conditionals", append([]byte("x = "), rep("a ? ", 200000)...), "Nesting too deep"},
		{"unary", append([]byte("x = "), rep("!", 500000)...), "Nesting too deep"},
		{"negations", append([]byte("x = "), rep("- ", 500000)...), "Nesting too deep"},
		{"4KiB NUL", make([]byte, 4<<10), "Not a text file"},
		{"16KiB NUL", make([]byte, 16<<10), "Not a text file"},
		{"random 64KiB", rnd(64 << 10), ""},
		{"random 1MiB", rnd(1 << 20), ""},
		{"printable 256KiB", printable(256 << 10), ""},
		{"printable 1MiB", printable(1 << 20), ""},
		{"1MiB of @", rep("@", 1<<20), "Too many tokens"},
		{"1MiB of quotes", rep(`"`, 1<<20), "Too many tokens"},
		{"1MiB attribute", append(append([]byte(`runtime { data_dir = "`), rep("a", 1<<20-40)...), `" }`...), ""},
		{"1MiB of blocks", rep("x {}\n", 1<<18), ""},
		{"balanced 1MiB", rep("x = [[[[]]]]\n", 1<<20/13), "Too many tokens"},
		{"too large", rep("#", MaxFileSize+1), "Configuration file too large"},
		// Just under the token limit: the parser's worst case.
		{"@ under the token limit", rep("@", MaxTokens-1), ""},
		{"brackets under the token limit", rep("x = [[]]\n", (MaxTokens-1)/7), ""},
	}
}

func TestHostileFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range hostileFiles() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if testing.Short() && tc.summary == "" && len(tc.src) > 64<<10 {
				// What the parser itself must cope with costs seconds
				// under the race detector; its first 64 KiB show the same.
				tc.src = tc.src[:64<<10]
			}
			f, diags := Parse("hostile.hcl", tc.src, Options{Engines: fakeEngines{}})
			if tc.summary != "" && !diags.HasErrors() {
				t.Fatal("accepted")
			}
			if tc.summary != "" && diags[0].Summary != tc.summary {
				t.Errorf("first diagnostic %q, want %q", diags[0].Summary, tc.summary)
			}
			if tc.summary != "" && len(diags) != 1 {
				t.Errorf("%d diagnostics, want 1", len(diags))
			}
			for _, d := range diags {
				if d.Subject == nil {
					t.Fatalf("diagnostic without a position: %s: %s", d.Summary, d.Detail)
				}
			}
			var out bytes.Buffer
			if err := WriteDiagnostics(&out, f, diags, false); err != nil {
				t.Fatal(err)
			}
			// At most MaxDiagnostics with clipped lines, and a count.
			if n := bytes.Count(out.Bytes(), []byte("\nhostile.hcl:")) + 1; n > MaxDiagnostics {
				t.Errorf("%d diagnostics printed, want at most %d", n, MaxDiagnostics)
			}
			if out.Len() > 64<<10 {
				t.Errorf("%d bytes of diagnostics, want at most 64 KiB", out.Len())
			}
			// A snippet of a binary file must not put NULs, escapes or
			// broken UTF-8 on the reader's terminal.
			if !utf8.Valid(out.Bytes()) || bytes.ContainsFunc(out.Bytes(), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' || r == 0x7f }) {
				t.Errorf("diagnostics hold control characters or invalid UTF-8: %q", out.Bytes()[:min(out.Len(), 200)])
			}
			if tc.summary != "" {
				// file:line:col, then the summary: what qrun prints.
				want := fmt.Sprintf("hostile.hcl:%d:%d: Error: %s\n", diags[0].Subject.Start.Line, diags[0].Subject.Start.Column, tc.summary)
				if !bytes.HasPrefix(out.Bytes(), []byte(want)) {
					t.Errorf("output starts %.200q, want %q", out.Bytes(), want)
				}
			}
			if len(diags) > MaxDiagnostics && !bytes.Contains(out.Bytes(), []byte("more diagnostics")) {
				t.Errorf("%d diagnostics printed without a count of the hidden ones:\n%s", len(diags), out.Bytes())
			}
		})
	}
}

// BenchmarkHostileFiles shows each hostile file is answered, diagnostics
// printed, well within a second (issue 12 item 11 asks for 1 s at 1 MiB).
func BenchmarkHostileFiles(b *testing.B) {
	for _, tc := range hostileFiles() {
		b.Run(strings.ReplaceAll(tc.name, " ", "_"), func(b *testing.B) {
			b.SetBytes(int64(len(tc.src)))
			for b.Loop() {
				f, diags := Parse("hostile.hcl", tc.src, Options{Engines: fakeEngines{}})
				var out bytes.Buffer
				if err := WriteDiagnostics(&out, f, diags, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// bigValidConfig is half a megabyte of real configuration: 15,000
// one-line queue blocks, which the token limit must let through.
func bigValidConfig() []byte {
	var b bytes.Buffer
	b.WriteString("engine \"m\" { type = \"memory\" }\n")
	for i := 0; b.Len() < 512<<10-64; i++ {
		fmt.Fprintf(&b, "queue \"q%06d\" { engine = \"m\" }\n", i)
	}
	return b.Bytes()
}

// TestBigValidConfig: the limits on hostile files leave room for far more
// ordinary configuration than anyone writes.
func TestBigValidConfig(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("parses half a megabyte; BenchmarkBigValidConfig times it")
	}
	src := bigValidConfig()
	f, diags := Parse("big.hcl", src, Options{Engines: fakeEngines{}})
	if diags.HasErrors() || len(f.Queues) < 15000 {
		t.Fatalf("%d queues, diagnostics %v", len(f.Queues), diags.Errs())
	}
}

// BenchmarkBigValidConfig parses the file of TestBigValidConfig.
func BenchmarkBigValidConfig(b *testing.B) {
	src := bigValidConfig()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, diags := Parse("big.hcl", src, Options{Engines: fakeEngines{}}); diags.HasErrors() {
			b.Fatal(diags)
		}
	}
}
