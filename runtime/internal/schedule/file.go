package schedule

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/qrun-dev/qrun/engines"
)

// FileClaimer claims ticks for an engine that stores nothing of its own
// (posixmq, shm): the last tick of each schedule is a file in Dir, written
// (atomically, synced) after the enqueue. It is at least once, not
// exactly once: a crash between the enqueue and the file write fires that
// tick again at the next start. It coordinates one process only.
type FileClaimer struct {
	Dir   string
	Queue engines.Queue

	mu sync.Mutex
}

func (c *FileClaimer) path(schedule string) string {
	return filepath.Join(c.Dir, schedule+".tick")
}

// Last implements Claimer.
func (c *FileClaimer) Last(ctx context.Context, schedule string) (time.Time, error) {
	b, err := os.ReadFile(c.path(schedule))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %q: read last tick: %w", schedule, err)
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule %q: %s: %w", schedule, c.path(schedule), err)
	}
	return t, nil
}

// Claim implements Claimer.
func (c *FileClaimer) Claim(ctx context.Context, schedule string, tick time.Time, msg engines.Message) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, err := c.Last(ctx, schedule)
	if err != nil {
		return false, err
	}
	if !tick.After(last) {
		return false, nil
	}
	if err := c.Queue.Enqueue(ctx, msg); err != nil {
		return false, fmt.Errorf("schedule %q: enqueue tick %s: %w", schedule, tick.Format(time.RFC3339), err)
	}
	if err := writeFileSync(c.path(schedule), []byte(tick.UTC().Format(time.RFC3339Nano)+"\n")); err != nil {
		return true, fmt.Errorf("schedule %q: record tick %s: %w", schedule, tick.Format(time.RFC3339), err)
	}
	return true, nil
}

// writeFileSync replaces path with b through a synced temporary file, so a
// crash leaves the old content or the new, never a torn one.
func writeFileSync(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tick-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
