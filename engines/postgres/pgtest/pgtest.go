// Package pgtest gives tests a real PostgreSQL server. With QRUN_PG_DSN set
// it uses that server; otherwise it starts one throwaway PostgreSQL 15
// cluster (initdb + pg_ctl on a unix socket in a temporary directory, run as
// the postgres OS user when the tests run as root, since initdb refuses root)
// and removes it afterwards. A test package starts one Server in TestMain and
// gives each test its own schema, so tests run in parallel on one server.
//
// fsync stays on: benchmarks against this server must measure what a real
// deployment pays for durability.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/qrun-dev/qrun/internal/testserver"
)

// BinDir is where Debian installs the PostgreSQL 15 server binaries; when
// it is missing, the newest /usr/lib/postgresql/*/bin is used.
const BinDir = "/usr/lib/postgresql/15/bin"

// binDir finds the server binaries.
func binDir() string {
	if _, err := os.Stat(filepath.Join(BinDir, "initdb")); err == nil {
		return BinDir
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	best, bestV := BinDir, 0
	for _, d := range dirs {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(d))))
		if err == nil && v > bestV {
			best, bestV = filepath.Dir(d), v
		}
	}
	return best
}

// EnvDSN names the environment variable holding the DSN of an existing
// server to use instead of a throwaway cluster.
const EnvDSN = "QRUN_PG_DSN"

// ErrNoServer is returned by Start when there is neither a DSN nor server
// binaries; tests then skip (or fail under QRUN_REQUIRE_TOOLS=1).
var ErrNoServer = errors.New("pgtest: no PostgreSQL: set " + EnvDSN + " or install postgresql-15")

// Server is a PostgreSQL server for one test package.
type Server struct {
	// DSN connects to the server's postgres database as a superuser.
	DSN string

	dir     string // cluster root: data/, sock/, log; empty when not ours
	bin     string // server binaries
	runAs   string // OS user running the server, "" for the current one
	uid     int
	gid     int
	schemas atomic.Uint64
}

// Start returns the server named by QRUN_PG_DSN or starts a throwaway one.
func Start() (*Server, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		return &Server{DSN: dsn}, nil
	}
	bin := binDir()
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoServer, err)
	}
	reapStale(bin)
	dir, err := os.MkdirTemp("", "qrun-pg-")
	if err != nil {
		return nil, err
	}
	// The owner file lets a later run stop this cluster should this test
	// binary die without cleaning up (a -timeout panic skips TestMain's end).
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		s.runAs = "postgres"
		u, err := user.Lookup(s.runAs)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs a %q user: %w", s.runAs, err)
		}
		s.uid, _ = strconv.Atoi(u.Uid)
		s.gid, _ = strconv.Atoi(u.Gid)
		// The server user must own its directories.
		if err := os.Chown(dir, s.uid, s.gid); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := s.init(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// reapStale stops and removes the throwaway clusters of test binaries that
// died without cleaning up.
func reapStale(bin string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "qrun-pg-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue // its owner still runs
		}
		stale := &Server{dir: dir, bin: bin}
		if os.Geteuid() == 0 {
			stale.runAs = "postgres"
		}
		if _, err := os.Stat(filepath.Join(stale.data(), "postmaster.pid")); err == nil {
			_ = stale.pgctl("stop")
		}
		_ = os.RemoveAll(dir)
	}
}

func (s *Server) sock() string { return filepath.Join(s.dir, "sock") }
func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// command builds a server-side command, run as the server user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	bin := filepath.Join(s.bin, name)
	if s.runAs != "" {
		return exec.Command("runuser", append([]string{"-u", s.runAs, "--", bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

func (s *Server) run(name string, args ...string) error {
	out, err := s.command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *Server) init() error {
	if err := s.run("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return err
	}
	// The server user creates its socket there; root (the tests) can use it.
	if err := os.MkdirAll(s.sock(), 0o700); err != nil {
		return err
	}
	if s.uid >= 0 {
		if err := os.Chown(s.sock(), s.uid, s.gid); err != nil {
			return err
		}
	}
	conf := strings.Join([]string{
		"listen_addresses = ''",
		"unix_socket_directories = '" + s.sock() + "'",
		// enginetest runs every subtest in parallel, each with its own pool.
		"max_connections = 400",
		"shared_buffers = 128MB",
		"fsync = on",
		"synchronous_commit = on",
		"log_min_messages = warning",
	}, "\n") + "\n"
	f, err := os.OpenFile(filepath.Join(s.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := s.pgctl("start"); err != nil {
		return err
	}
	s.DSN = fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", s.sock())
	return nil
}

func (s *Server) pgctl(action string, extra ...string) error {
	args := append([]string{action, "-D", s.data(), "-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "60"}, extra...)
	if action == "stop" || action == "restart" {
		args = append(args, "-m", "fast")
	}
	return s.run("pg_ctl", args...)
}

// Owned reports whether the server is the throwaway one this package
// started (and so may be restarted).
func (s *Server) Owned() bool { return s.dir != "" }

// Restart restarts a throwaway server (pg_ctl restart -m fast): every
// connection is cut, as in a real database restart.
func (s *Server) Restart() error {
	if !s.Owned() {
		return errors.New("pgtest: cannot restart a server given by " + EnvDSN)
	}
	return s.pgctl("restart")
}

// Stop stops and removes a throwaway server; it does nothing for a server
// given by DSN.
func (s *Server) Stop() {
	if s.dir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(s.data(), "postmaster.pid")); err == nil {
		_ = s.pgctl("stop")
	}
	_ = os.RemoveAll(s.dir)
}

// Schema returns a schema name unique to this test run and drops the
// schema (whatever created it) when the test ends.
func (s *Server) Schema(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.schemas.Add(1))
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.DSN)
		if err != nil {
			tb.Logf("pgtest: dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			tb.Logf("pgtest: dropping schema %s: %v", name, err)
		}
	})
	return name
}

// Run runs a test package against one server: it starts the server, runs
// the tests with *srv set, stops the server and returns m.Run's exit code
// (TestMain passes it to os.Exit after its own cleanup). Without a server
// the tests still run, and each one that needs it skips (see Need).
func Run(m *testing.M, srv **Server) int {
	return testserver.Run(m, "pgtest", srv, Start, (*Server).Stop)
}

// Need returns the server, or skips the test loudly when there is none
// (failing instead under QRUN_REQUIRE_TOOLS=1).
func Need(tb testing.TB, s *Server) *Server {
	tb.Helper()
	return testserver.Need(tb, s, ErrNoServer)
}

// Psql returns the path of the psql client, or "" when it is missing.
func Psql() string {
	for _, p := range []string{filepath.Join(binDir(), "psql"), "/usr/bin/psql"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	return ""
}
