package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded schema version.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded migrations in version order. A file is
// named NNNN_what.sql; NNNN is its version.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		v, rest, ok := strings.Cut(e.Name(), "_")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || !strings.HasSuffix(rest, ".sql") {
			return nil, fmt.Errorf("postgres: migration file %q is not named NNNN_name.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: n, name: strings.TrimSuffix(rest, ".sql"), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// SchemaVersion is the schema version this build of the engine expects.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// Migrate brings schema up to the newest embedded version and reports the
// versions it applied. It runs in one transaction under an advisory lock
// keyed by the schema, so two processes starting at once apply each
// migration exactly once, and a failed migration leaves nothing behind.
func Migrate(ctx context.Context, conn *pgx.Conn, schema string) ([]int, error) {
	return migrateTo(ctx, conn, schema, 0)
}

// migrateTo is Migrate up to version upTo (0: the newest), so that a test
// can build a schema as an older qrun left it.
func migrateTo(ctx context.Context, conn *pgx.Conn, schema string, upTo int) ([]int, error) {
	if err := checkSchemaName(schema); err != nil {
		return nil, err
	}
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// The lock is transaction-scoped, so it cannot outlive a process that
	// dies mid-migration.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('qrun.migrate'), hashtext($1))", schema); err != nil {
		return nil, fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	qs := pgx.Identifier{schema}.Sanitize()
	if _, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+qs); err != nil {
		return nil, fmt.Errorf("postgres: migrate: create schema %s: %w", schema, err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+qs+`.schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+qs+".schema_migrations").Scan(&current); err != nil {
		return nil, fmt.Errorf("postgres: migrate: read version: %w", err)
	}
	if last := ms[len(ms)-1].version; current > last {
		return nil, fmt.Errorf("postgres: schema %s is at version %d, newer than this qrun knows (%d): %w", schema, current, last, ErrSchemaVersion)
	}
	var applied []int
	for _, m := range ms {
		if m.version <= current || (upTo > 0 && m.version > upTo) {
			continue
		}
		sql := strings.NewReplacer("__Q__", qs, "__CHANNEL__", channelName(schema)).Replace(m.sql)
		if _, err := tx.Exec(ctx, sql); err != nil {
			return nil, fmt.Errorf("postgres: migration %04d_%s: %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+qs+".schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return nil, fmt.Errorf("postgres: migration %04d_%s: %w", m.version, m.name, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("postgres: migrate: commit: %w", err)
	}
	return applied, nil
}

// schemaVersion reads the schema's version; 0 when it has none.
func schemaVersion(ctx context.Context, q querier, schema string) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{schema, "schema_migrations"}.Sanitize()).Scan(&exists); err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil
	}
	var v int
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+pgx.Identifier{schema}.Sanitize()+".schema_migrations").Scan(&v)
	return v, err
}

// channelName is the LISTEN/NOTIFY channel of a schema's queues.
func channelName(schema string) string { return "qrun_" + schema }

// checkSchemaName accepts names that fit a channel name (63 bytes in all).
func checkSchemaName(schema string) error {
	if schema == "" || len(channelName(schema)) > 63 || strings.ContainsRune(schema, 0) {
		return fmt.Errorf("postgres: schema name %q must be 1 to 58 bytes: %w", schema, ErrConfig)
	}
	return nil
}
