package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// reloader is what SIGHUP needs from the server.
type reloader interface {
	Reload(ctx context.Context) (admin.ReloadResult, error)
}

// onHangup re-reads the configuration on every SIGHUP until the returned
// stop is called. It is installed before the server exists, because
// SIGHUP's default action would kill a qrun still compiling its plugins;
// until serve hands it the server, a SIGHUP is logged and ignored. Each
// outcome is logged: the changes, or the diagnostics of a refused file
// (the running configuration stays).
func onHangup(log *zap.Logger) (serve func(reloader), stop func()) {
	ch := make(chan os.Signal, 1)
	done := make(chan struct{})
	srvCh := make(chan reloader, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		var srv reloader
		for {
			select {
			case <-done:
				return
			case srv = <-srvCh:
				continue
			case <-ch:
			}
			if srv == nil {
				log.Warn("SIGHUP ignored: qrun is still starting")
				continue
			}
			res, err := srv.Reload(context.Background())
			var ice *admin.InvalidConfigError
			switch {
			case errors.As(err, &ice):
				log.Error("SIGHUP: configuration refused; nothing was changed", zap.String("diagnostics", ice.Diagnostics))
			case err != nil:
				log.Error("SIGHUP: reload failed", zap.Error(err))
			default:
				log.Info("SIGHUP: configuration reloaded", zap.Strings("changes", res.Changes), zap.Strings("warnings", res.Warnings))
			}
		}
	}()
	return func(r reloader) { srvCh <- r }, func() { signal.Stop(ch); close(done) }
}

// cmdReload asks a running qrun, through its admin API, to re-read its
// configuration file. FILE is read for the admin address and token; qrun
// reloads the file it was started with.
func cmdReload(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE` of the running qrun")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this `duration` (a reload waits for removed consumers to drain)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	// The running qrun validates the file again and is the judge; checking
	// here first saves a round trip and works when the file is too broken
	// to say where qrun listens.
	cfg, err := loadConfig(*path, pluginsSkipped, stderr)
	if err != nil {
		return err
	}
	url, err := adminURL(cfg, *path, "; send qrun SIGHUP instead")
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: url, Token: cfg.Runtime.AdminToken}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := c.Reload(ctx)
	var ice *admin.InvalidConfigError
	var se *admin.StatusError
	switch {
	case errors.As(err, &ice):
		fmt.Fprint(stderr, ice.Diagnostics)
		fmt.Fprintln(stderr, "qrun: configuration refused; nothing was changed")
		return usageError{errInvalidConfig}
	case err != nil && !errors.As(err, &se):
		return fmt.Errorf("%w (is qrun running with %s?)", err, *path)
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "reloaded %s\n", res.Config)
	if len(res.Changes) == 0 {
		fmt.Fprintln(stdout, "  no changes")
	}
	for _, ch := range res.Changes {
		fmt.Fprintf(stdout, "  %s\n", ch)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stdout, "  warning: %s\n", strings.TrimSpace(w))
	}
	return nil
}
