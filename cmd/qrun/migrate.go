package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/engines/postgres"
)

// cmdMigrate brings the schema of every postgres engine in the config (or
// only --engine NAME) to this qrun's version. Engines migrate themselves
// at start unless `migrate = false`; this is for deployments that run
// schema changes as a separate, privileged step.
func cmdMigrate(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE`")
	only := fs.String("engine", "", "migrate only the engine `NAME`")
	timeout := fs.Duration("timeout", time.Minute, "give up after this `duration` per engine")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, pluginsSkipped, stderr)
	if err != nil {
		return err
	}
	found := 0
	for _, e := range cfg.Engines {
		if e.Type != "postgres" || (*only != "" && e.Name != *only) {
			continue
		}
		found++
		s, diags := postgres.DecodeSettings(e.Body, cfg.EvalContext())
		if diags.HasErrors() {
			return fmt.Errorf("engine %q: %w", e.Name, diags)
		}
		opts := s.Options
		if opts.Schema == "" {
			opts.Schema = postgres.DefaultSchema
		}
		if err := migrateOne(e.Name, opts, *timeout, stdout); err != nil {
			return err
		}
	}
	if found == 0 {
		if *only != "" {
			return usagef("no postgres engine named %q in %s", *only, *path)
		}
		fmt.Fprintf(stdout, "no postgres engines in %s: nothing to migrate\n", *path)
	}
	return nil
}

func migrateOne(name string, opts postgres.Options, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, opts.DSN)
	if err != nil {
		return fmt.Errorf("engine %q: connect: %w", name, err)
	}
	defer conn.Close(context.Background())
	applied, err := postgres.Migrate(ctx, conn, opts.Schema)
	if err != nil {
		return fmt.Errorf("engine %q: %w", name, err)
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "engine %s: schema %s is up to date (version %d)\n", name, opts.Schema, postgres.SchemaVersion())
		return nil
	}
	fmt.Fprintf(stdout, "engine %s: schema %s migrated to version %d (applied %v)\n", name, opts.Schema, applied[len(applied)-1], applied)
	return nil
}
