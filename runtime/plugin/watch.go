package plugin

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultDebounce is how long a watched file must be quiet after a change
// before it is reloaded. A file replaced by rename is complete at once, but
// one copied over in place arrives as a burst of writes, microseconds apart
// from a local disk; 10 ms covers such a burst and keeps a small module's
// swap well under the 50 ms it is allowed. A reader that still catches a
// file half written is not counted as a failed reload (see Live.Reload).
const DefaultDebounce = 10 * time.Millisecond

// Watcher calls a function when a watched file changes, debounced. It
// watches the file's directory rather than the file, because deployments
// replace files by renaming a new one over them (so the watched inode goes
// away) and because editors write a temporary file first. One Watcher (one
// inotify instance) serves every consumer: the kernel caps instances per
// user at 128 by default.
type Watcher struct {
	fs       *fsnotify.Watcher
	log      *zap.Logger
	debounce time.Duration

	mu    sync.Mutex
	dirs  map[string]int                 // watched directory -> files in it
	files map[string]map[*watch]struct{} // cleaned absolute path -> watches
	done  chan struct{}
}

type watch struct {
	w     *Watcher
	path  string
	fn    func()
	mu    sync.Mutex
	timer *time.Timer
}

// NewWatcher starts a watcher; debounce <= 0 means DefaultDebounce.
func NewWatcher(log *zap.Logger, debounce time.Duration) (*Watcher, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("plugin: file watcher: %w", err)
	}
	w := &Watcher{
		fs: fw, log: log, debounce: debounce,
		dirs: map[string]int{}, files: map[string]map[*watch]struct{}{}, done: make(chan struct{}),
	}
	go w.loop()
	return w, nil
}

// Watch calls fn, on a goroutine of its own, once path has changed and then
// been quiet for the debounce interval. The returned stop ends the watch.
func (w *Watcher) Watch(path string, fn func()) (stop func(), err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("plugin: watch %s: %w", path, err)
	}
	dir := filepath.Dir(abs)
	wt := &watch{w: w, path: abs, fn: fn}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dirs[dir] == 0 {
		if err := w.fs.Add(dir); err != nil {
			return nil, fmt.Errorf("plugin: watch %s: %w", dir, err)
		}
	}
	w.dirs[dir]++
	if w.files[abs] == nil {
		w.files[abs] = map[*watch]struct{}{}
	}
	w.files[abs][wt] = struct{}{}
	var once sync.Once
	return func() { once.Do(func() { w.remove(wt, dir) }) }, nil
}

func (w *Watcher) remove(wt *watch, dir string) {
	wt.mu.Lock()
	if wt.timer != nil {
		wt.timer.Stop()
	}
	wt.fn = nil
	wt.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.files[wt.path], wt)
	if len(w.files[wt.path]) == 0 {
		delete(w.files, wt.path)
	}
	if w.dirs[dir]--; w.dirs[dir] == 0 {
		delete(w.dirs, dir)
		_ = w.fs.Remove(dir)
	}
}

// Close stops the watcher; pending debounced calls are dropped.
func (w *Watcher) Close() error {
	err := w.fs.Close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ws := range w.files {
		for wt := range ws {
			wt.mu.Lock()
			if wt.timer != nil {
				wt.timer.Stop()
			}
			wt.fn = nil
			wt.mu.Unlock()
		}
	}
	return err
}

func (w *Watcher) loop() {
	defer close(w.done)
	for {
		select {
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			w.event(ev)
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: anything may have changed.
				w.log.Warn("file watch queue overflowed; re-reading every watched plugin")
				w.pokeAll()
				continue
			}
			w.log.Warn("file watch error", zap.Error(err))
		}
	}
}

// event handles one change in a watched directory. Writes and creations of
// a watched file count (a rename over it arrives as a creation); removal
// does not (the running version keeps serving, and the new file will be a
// creation). A creation of another name in the directory pokes every file
// there, since a symlink switch (how Kubernetes updates mounted files)
// changes what a path means without an event for the path itself.
func (w *Watcher) event(ev fsnotify.Event) {
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) {
		return
	}
	name := filepath.Clean(ev.Name)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ws, ok := w.files[name]; ok {
		for wt := range ws {
			wt.poke()
		}
		return
	}
	if ev.Has(fsnotify.Create) {
		dir := filepath.Dir(name)
		for path, ws := range w.files {
			if filepath.Dir(path) == dir {
				for wt := range ws {
					wt.poke()
				}
			}
		}
	}
}

func (w *Watcher) pokeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ws := range w.files {
		for wt := range ws {
			wt.poke()
		}
	}
}

// poke (re)starts the watch's quiet-period timer.
func (wt *watch) poke() {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.fn == nil {
		return
	}
	if wt.timer == nil {
		wt.timer = time.AfterFunc(wt.w.debounce, wt.fire)
		return
	}
	wt.timer.Reset(wt.w.debounce)
}

func (wt *watch) fire() {
	wt.mu.Lock()
	fn := wt.fn
	wt.mu.Unlock()
	if fn != nil {
		fn()
	}
}
