// Command qrun runs queue consumers written as WebAssembly plugins.
//
//	qrun run -c FILE         run the runtime described by FILE
//	qrun validate -c FILE    check FILE (and every plugin it names) and exit
//	qrun send -c FILE -q QUEUE [-a key=value]... [--delay D] [BODY | - | @file]
//	qrun reload -c FILE      make the running qrun re-read its config (or send it SIGHUP)
//	qrun stats | consumers | dlq | peek | pause | resume   (clients of the admin API; ops.go, peek.go)
//	qrun bench -c FILE -q QUEUE -n N                (load generator; bench.go)
//	qrun version
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/plugin"
	"github.com/qrun-dev/qrun/runtime/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// usageError marks errors that exit with exitUsage.
type usageError struct{ err error }

// Error returns the underlying message.
func (e usageError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error.
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

const usage = `qrun runs queue consumers written as WebAssembly plugins.

Usage:
  qrun run -c FILE [--log-format auto|console|json] [--log-level LEVEL]
  qrun validate -c FILE
  qrun send -c FILE -q QUEUE [-a key=value]... [--delay D] [BODY | - | @file]
  qrun reload -c FILE
  qrun migrate -c FILE [--engine NAME]
  qrun plugin check [--json] FILE.wasm... | qrun plugin new --lang LANG [--dir DIR] NAME
  qrun stats [--watch] [--json]
  qrun consumers [--json]
  qrun pause CONSUMER | qrun resume CONSUMER
  qrun dlq list | show QUEUE | redrive QUEUE [--id ID]... | purge QUEUE --yes
  qrun peek QUEUE [--all] [--in-flight] [--json] [-n N]
  qrun bench -c FILE -q QUEUE [-n N] [--size B] [--producers P] [--rate R] [--json]
  qrun version

The admin commands find qrun from -c FILE (runtime.admin_listen, admin_token)
or --addr and --token (default $QRUN_ADMIN_TOKEN); see qrun COMMAND -h.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stderr)
	case "validate":
		err = cmdValidate(args[1:], stdout, stderr)
	case "send":
		err = cmdSend(args[1:], stdin, stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "migrate":
		err = cmdMigrate(args[1:], stdout, stderr)
	case "stats":
		err = cmdStats(args[1:], stdout, stderr)
	case "consumers":
		err = cmdConsumers(args[1:], stdout, stderr)
	case "pause", "resume":
		err = cmdPauseResume(args[0], args[1:], stdout, stderr)
	case "dlq":
		err = cmdDLQ(args[1:], stdout, stderr)
	case "peek":
		err = cmdPeek(args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "plugin":
		return cmdPlugin(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "qrun %s\n", buildVersion())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		err = usagef("unknown command %q", args[0])
	}
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if errors.Is(err, errInvalidConfig) {
		return exitUsage // the diagnostics are printed already
	}
	if errors.As(err, new(reportedError)) {
		return exitRuntime // logged already
	}
	if errors.As(err, new(usageError)) {
		fmt.Fprintf(stderr, "qrun: %v\nRun 'qrun help' for usage.\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "qrun: %v\n", err)
	return exitRuntime
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// reportedError is a runtime failure already written to the log.
type reportedError struct{ error }

// errInvalidConfig is returned after the diagnostics were printed.
var errInvalidConfig = errors.New("invalid configuration")

// pluginCheck says how far parseConfig goes with each consumer's plugin.
type pluginCheck int

const (
	// pluginsSkipped leaves plugins alone: for commands that never run
	// one (migrate) or that ask a running qrun, which checks them (reload).
	pluginsSkipped pluginCheck = iota
	// pluginsStarted starts each plugin as run would, compiling in memory.
	pluginsStarted
	// pluginsStartedCached starts each plugin and keeps the compiled code
	// in the file's cache_dir, for a server started right after.
	pluginsStartedCached
)

// loadConfig parses and validates FILE, printing diagnostics to stderr;
// plugins are checked as far as check says.
func loadConfig(path string, check pluginCheck, stderr io.Writer) (*config.File, error) {
	cfg, diags, err := parseConfig(path, check)
	if err != nil {
		return nil, err
	}
	return cfg, writeDiagnostics(stderr, cfg, diags)
}

// parseConfig parses and validates FILE, checking plugins as far as check
// says, and returns the diagnostics for the caller to show (run logs them,
// see logDiagnostics).
func parseConfig(path string, check pluginCheck) (*config.File, hcl.Diagnostics, error) {
	if path == "" {
		return nil, nil, usagef("missing -c FILE")
	}
	opts := config.Options{Engines: server.Builtin()}
	if check != pluginsSkipped {
		// Plugins are started as run starts them, so validate refuses
		// exactly what run would.
		verify, closeCheck := server.PluginChecker(context.Background(), check == pluginsStartedCached)
		defer closeCheck()
		opts.CheckPlugin = verify
	}
	cfg, diags := config.Load(path, opts)
	return cfg, diags, nil
}

// writeDiagnostics prints diags as text and says whether they hold an error.
func writeDiagnostics(stderr io.Writer, cfg *config.File, diags hcl.Diagnostics) error {
	if len(diags) > 0 {
		_ = config.WriteDiagnostics(stderr, cfg, diags, isTerminal(stderr))
	}
	if diags.HasErrors() {
		return usageError{errInvalidConfig}
	}
	return nil
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config `FILE`")
	format := fs.String("log-format", "", "log format: auto, console or json (overrides the config)")
	level := fs.String("log-level", "", "log level: debug, info, warn or error (overrides the config)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, diags, err := parseConfig(*path, pluginsStartedCached)
	if err != nil {
		return err
	}
	log, err := runLogger(*format, *level, cfg, diags, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signalContext(func(sig os.Signal) {
		log.Info("signal received: draining; a second signal exits at once", zap.Stringer("signal", sig))
	}, func(sig os.Signal) {
		log.Warn("second signal: exiting without draining", zap.Stringer("signal", sig))
		_ = log.Sync()
		os.Exit(exitRuntime)
	})
	defer stop()
	serveHangup, stopHangup := onHangup(log)
	defer stopHangup()
	// This process is qrun's alone, so a hot swap may lend the compile
	// its own P (server.Options.OwnsGOMAXPROCS).
	opts := server.Options{Logger: log, OwnsGOMAXPROCS: true}
	// A hot swap of a large plugin compiles in a child qrun at low
	// priority, so that deliveries keep the CPU (plugin.ChildPrecompiler).
	if exe, err := os.Executable(); err == nil {
		opts.Precompile = plugin.ChildPrecompiler(exe, "plugin", "precompile")
	}
	srv, err := server.New(ctx, cfg, opts)
	if err == nil {
		serveHangup(srv)
		err = srv.Run(ctx)
	}
	if err != nil {
		log.Error("qrun stopped", zap.Error(err))
		return reportedError{err}
	}
	return nil
}

// signalContext is cancelled by the first SIGINT or SIGTERM, after calling
// first; a second signal calls force. The returned stop releases it all.
func signalContext(first, force func(os.Signal)) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	stopped := make(chan struct{})
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		select {
		case sig := <-ch:
			first(sig)
			cancel()
		case <-stopped:
			return
		}
		select {
		case sig := <-ch:
			force(sig)
		case <-stopped:
		}
	}()
	return ctx, func() { signal.Stop(ch); close(stopped); cancel() }
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config `FILE`")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, err := loadConfig(*path, pluginsStarted, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d engines, %d queues, %d consumers)\n", *path, len(cfg.Engines), len(cfg.Queues), len(cfg.Consumers))
	return nil
}
