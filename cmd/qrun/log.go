package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/qrun-dev/qrun/runtime/config"
)

// newLogger builds the process logger: console format on a terminal, JSON
// otherwise, unless format says which.
func newLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if level == "" {
		level = "info"
	}
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	var enc zapcore.Encoder
	switch resolveFormat(format, w) {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("log format %q: want auto, console or json", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// resolveFormat turns "auto" (or nothing) into console on a terminal and
// json otherwise; other formats are returned as they are.
func resolveFormat(format string, w io.Writer) string {
	if format != "" && format != "auto" {
		return format
	}
	if isTerminal(w) {
		return "console"
	}
	return "json"
}

// runLogger builds qrun run's logger from the flags, falling back on the
// config's settings, and reports the config's diagnostics. In JSON mode they
// are log lines too (one per diagnostic), so every line qrun writes parses
// as JSON; otherwise they are printed as text with their source snippet. It
// returns a usage error when the config holds an error.
func runLogger(format, level string, cfg *config.File, diags hcl.Diagnostics, stderr io.Writer) (*zap.Logger, error) {
	if cfg != nil {
		if format == "" {
			format = cfg.Runtime.LogFormat
		}
		if level == "" {
			level = cfg.Runtime.LogLevel
		}
	}
	log, err := newLogger(format, level, stderr)
	if err != nil || resolveFormat(format, stderr) != "json" {
		if derr := writeDiagnostics(stderr, cfg, diags); derr != nil {
			return nil, derr
		}
		if err != nil {
			return nil, usageError{err}
		}
		return log, nil
	}
	logDiagnostics(log, diags)
	if diags.HasErrors() {
		_ = log.Sync()
		return nil, usageError{errInvalidConfig}
	}
	return log, nil
}

// logDiagnostics writes each diagnostic as one log line: a warning at warn
// level, an error at error level, with its position, summary and detail.
func logDiagnostics(log *zap.Logger, diags hcl.Diagnostics) {
	for _, d := range diags {
		fields := []zap.Field{zap.String("summary", d.Summary), zap.String("detail", d.Detail)}
		if d.Subject != nil {
			fields = append([]zap.Field{zap.String("position", config.Position(*d.Subject))}, fields...)
		}
		if d.Severity == hcl.DiagError {
			log.Error("config error", fields...)
		} else {
			log.Warn("config warning", fields...)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return terminal(f.Fd())
}
