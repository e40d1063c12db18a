// Command qrun runs queue consumers written as WebAssembly plugins.
//
//	qrun run -c FILE         run the runtime described by FILE
//	qrun validate -c FILE    check FILE (and every plugin it names) and exit
//	qrun send -c FILE -q QUEUE [flags] [BODY | - | @file]
//	qrun reload -c FILE      make the running qrun re-read its config (or send it SIGHUP)
//	qrun stats | consumers | dlq | peek | pause | resume   (clients of the admin API; ops.go, peek.go)
//	qrun bench -c FILE -q QUEUE                     (load generator; bench.go)
//	qrun COMMAND --help      the command's arguments and flags (cli.go, commandTable)
//
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/plugins"
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

// rootNotes end qrun --help, after the list of commands.
const rootNotes = `The admin commands (stats, consumers, pause, resume, dlq, peek) find qrun
from -c FILE (runtime.admin_listen, admin_token) or --addr and --token
(default $QRUN_ADMIN_TOKEN).

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or invalid config.`

func main() {
	redis.SilenceLibraryLog() // the engine logs an outage once; go-redis would log every failed dial
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command args name and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := commandTable()
	if len(args) == 0 {
		writeHelp(stderr, root.name, root, nil)
		return exitUsage
	}
	switch args[0] {
	case "--version", "-version":
		args = append([]string{"version"}, args[1:]...)
	case "help": // qrun help [COMMAND...] is COMMAND... --help
		args = append(slices.Clone(args[1:]), "--help")
	}
	inv, err := resolve(root, args)
	if err != nil {
		return exitCode(err, inv.path, stderr)
	}
	if inv.cmd.subs != nil { // a group: alone, or with --help
		if len(inv.args) == 0 {
			names := make([]string, 0, len(inv.cmd.subs))
			for _, s := range inv.cmd.visible() {
				names = append(names, s.name)
			}
			return exitCode(usagef("%s needs a subcommand: %s", strings.TrimPrefix(inv.path, root.name+" "), strings.Join(names, ", ")), inv.path, stderr)
		}
		writeHelp(stdout, inv.path, inv.cmd, nil)
		return exitOK
	}
	e := &env{fs: newFlagSet(strings.TrimPrefix(inv.path, root.name+" ")), args: inv.args, stdin: stdin, stdout: stdout, stderr: stderr}
	err = inv.cmd.run(e)
	if errors.Is(err, errHelp) {
		writeHelp(stdout, inv.path, inv.cmd, e.fs)
		return exitOK
	}
	return exitCode(err, inv.path, stderr)
}

// exitCode says how the command at path ends after err, printing err
// unless it was reported already.
func exitCode(err error, path string, stderr io.Writer) int {
	var status exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &status):
		return int(status) // the command said why
	case errors.Is(err, errInvalidConfig):
		return exitUsage // the diagnostics are printed already
	case errors.As(err, new(reportedError)):
		return exitRuntime // logged already
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "qrun: %v\nRun '%s --help' for usage.\n", err, path)
		return exitUsage
	}
	fmt.Fprintf(stderr, "qrun: %v\n", err)
	return exitRuntime
}

// exitStatus ends qrun with this code; the command has said why (qrun
// plugin check exits 2 for a refused module, after its report).
type exitStatus int

// Error says which code.
func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// commandTable lists qrun's commands. Each run function hands the
// command's flag set and arguments to its body, which defines its flags
// and calls parseFlags before anything else.
func commandTable() *command {
	adminUsage := func(args string) string { return "[-c FILE | --addr ADDR] [flags]" + args }
	return &command{name: "qrun", help: "qrun runs queue consumers written as WebAssembly plugins.", notes: rootNotes, subs: []*command{
		{name: "run", usage: "-c FILE [flags]", summary: "run the runtime a config describes, until SIGINT or SIGTERM",
			run: func(e *env) error { return cmdRun(e.fs, e.args, e.stderr) }},
		{name: "validate", usage: "-c FILE", summary: "check a config and every plugin it names, and exit",
			run: func(e *env) error { return cmdValidate(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "send", usage: "-c FILE -q QUEUE [flags] [BODY | - | @file]", summary: "enqueue one message",
			help: `Enqueue one message: BODY as given, - reads it from standard input, @file
from a file. Queues of engines other processes share (shm, postgres) are
written directly; others through the admin API of the qrun running FILE.
No plugin is checked.`,
			run: func(e *env) error { return cmdSend(e.fs, e.args, e.stdin, e.stdout, e.stderr) }},
		{name: "reload", usage: "-c FILE [flags]", summary: "make the qrun running FILE re-read it (as SIGHUP does)",
			run: func(e *env) error { return cmdReload(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "migrate", usage: "-c FILE [flags]", summary: "create or upgrade the schema of the config's postgres engines",
			run: func(e *env) error { return cmdMigrate(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "plugin", summary: "check handler modules, or write a new handler", subs: []*command{
			{name: "check", usage: "[--json] FILE.wasm...", summary: "report what qrun thinks of each module",
				help: `Report each module's ABI version, exports, imports, WASI use and memory
limits, and every reason qrun would refuse it. Exit 0 when every module is
accepted, 2 when any has a problem.`,
				run: func(e *env) error { return cmdPluginCheck(e.fs, e.args, e.stdout, e.stderr) }},
			{name: "new", usage: "--lang LANG [--dir DIR] NAME", summary: "write a buildable handler called NAME",
				help: `Write a buildable handler called NAME into DIR (default ./NAME), with a
copy of LANG's SDK, a build.sh and a README. LANG: ` + strings.Join(plugins.Languages(), ", ") + `.`,
				run: func(e *env) error { return cmdPluginNew(e.fs, e.args, e.stdout, e.stderr) }},
			{name: "precompile", usage: "--cache DIR < module.wasm", hidden: true,
				summary: "compile the module on stdin into the cache (run by qrun on a hot swap)",
				run:     func(e *env) error { return cmdPluginPrecompile(e.fs, e.args, e.stdin, e.stderr) }},
		}},
		{name: "stats", usage: adminUsage(""), summary: "show the queues, once or like top",
			run: func(e *env) error { return cmdStats(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "consumers", usage: adminUsage(" [NAME...]"), summary: "show the consumers and their recent errors",
			run: func(e *env) error { return cmdConsumers(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "schedules", usage: adminUsage(""), summary: "list the schedules and their next fire times", help: schedulesHelp,
			run: func(e *env) error { return cmdSchedules(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "pause", usage: adminUsage(" CONSUMER"), summary: "stop a consumer taking messages",
			run: func(e *env) error { return cmdPauseResume("pause", e.fs, e.args, e.stdout, e.stderr) }},
		{name: "resume", usage: adminUsage(" CONSUMER"), summary: "let a paused consumer take messages again",
			run: func(e *env) error { return cmdPauseResume("resume", e.fs, e.args, e.stdout, e.stderr) }},
		{name: "dlq", summary: "list, show, redrive or purge dead-letter queues",
			help: `Work with dead-letter queues. QUEUE is a dead-letter queue, or a queue
whose dead-letter queue is meant.`,
			subs: []*command{
				{name: "list", usage: adminUsage(""), summary: "list the dead-letter queues, their depth and sources",
					run: func(e *env) error { return cmdDLQ("list", e.fs, e.args, e.stdout, e.stderr) }},
				{name: "show", usage: adminUsage(" QUEUE"), summary: "show the first messages of a dead-letter queue",
					run: func(e *env) error { return cmdDLQ("show", e.fs, e.args, e.stdout, e.stderr) }},
				{name: "redrive", usage: adminUsage(" QUEUE"), summary: "move dead letters back to the queue they came from",
					run: func(e *env) error { return cmdDLQ("redrive", e.fs, e.args, e.stdout, e.stderr) }},
				{name: "purge", usage: "--yes " + adminUsage(" QUEUE"), summary: "delete every message of a dead-letter queue",
					run: func(e *env) error { return cmdDLQ("purge", e.fs, e.args, e.stdout, e.stderr) }},
			}},
		{name: "kv", summary: "read and write the key-value stores handlers keep state in", help: kvHelp,
			subs: []*command{
				{name: "get", usage: adminUsage(" STORE KEY"), summary: "print a key's value",
					run: func(e *env) error { return cmdKV("get", e.fs, e.args, e.stdin, e.stdout, e.stderr) }},
				{name: "set", usage: adminUsage(" STORE KEY (VALUE | - | @file)"), summary: "set a key's value",
					run: func(e *env) error { return cmdKV("set", e.fs, e.args, e.stdin, e.stdout, e.stderr) }},
				{name: "del", usage: adminUsage(" STORE KEY"), summary: "delete a key",
					run: func(e *env) error { return cmdKV("del", e.fs, e.args, e.stdin, e.stdout, e.stderr) }},
				{name: "list", usage: adminUsage(" STORE [PREFIX]"), summary: "list a store's keys and values, in key order",
					run: func(e *env) error { return cmdKV("list", e.fs, e.args, e.stdin, e.stdout, e.stderr) }},
			}},
		{name: "peek", usage: adminUsage(" QUEUE"), summary: "show a queue's messages without consuming them",
			run: func(e *env) error { return cmdPeek(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "bench", usage: "-c FILE -q QUEUE [flags]", summary: "measure the runtime a config describes, in this process",
			run: func(e *env) error { return cmdBench(e.fs, e.args, e.stdout, e.stderr) }},
		{name: "version", usage: "", summary: "print qrun's version",
			run: func(e *env) error {
				if err := parseNoArgs(e.fs, e.args); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "qrun %s\n", buildVersion())
				return nil
			}},
	}}
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

func cmdRun(fs *pflag.FlagSet, args []string, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE`")
	format := fs.String("log-format", "", "log `format`: auto, console or json (overrides the config)")
	level := fs.String("log-level", "", "log `level`: debug, info, warn or error (overrides the config)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
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

func cmdValidate(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE`")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, pluginsStarted, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d engines, %d queues, %d consumers)\n", *path, len(cfg.Engines), len(cfg.Queues), len(cfg.Consumers))
	return nil
}
