package postgres_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/qrun-dev/qrun/engines/postgres"
)

// TestLogLinesRepeatNoKey: the runtime hands the engine a logger carrying
// "engine": <config name>; the engine's own fields must not add a second
// "engine" key, which JSON parsers resolve by dropping one (issue 12 item 6).
func TestLogLinesRepeatNoKey(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&out), zap.DebugLevel)
	log := zap.New(core).With(zap.String("engine", "pg"))
	// A fresh schema, so opening it logs "schema migrated".
	newEngine(t, "", postgres.Options{Logger: log})
	var lines int
	for _, line := range bytes.Split([]byte(out.String()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		lines++
		seen := map[string]bool{}
		dec := json.NewDecoder(bytes.NewReader(line))
		if _, err := dec.Token(); err != nil { // {
			t.Fatalf("%s: %v", line, err)
		}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if seen[k.(string)] {
				t.Errorf("key %q twice in %s", k, line)
			}
			seen[k.(string)] = true
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
		}
	}
	if lines == 0 {
		t.Fatal("the engine logged nothing; the test needs a line to inspect")
	}
}
