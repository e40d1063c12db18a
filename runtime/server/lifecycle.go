package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// ErrStarted is returned by Start on a server that was already started.
var ErrStarted = errors.New("server: already started")

// ErrStopped is returned by Start on a server that was stopped: a Server
// runs once; build a new one with New to run again.
var ErrStopped = errors.New("server: stopped")

// Lifecycle states; a Server only moves forward through them.
const (
	stateNew = iota
	stateRunning
	stateStopping
	stateStopped
)

// lifecycle is the state Start, Stop, Started and Done share, in the
// manner of River's Client: Start returns once the consumers run, Stop
// asks for a drain bounded by its ctx and waits for it, and the channels
// let a caller that did neither learn about both.
type lifecycle struct {
	mu      sync.Mutex
	state   int
	stopCtx context.Context // the first Stop's ctx; bounds the drain
	started chan struct{}   // closed once running
	stop    chan struct{}   // closed by the first Stop of a running server
	done    chan struct{}   // closed once everything is closed
	// Set before done closes, read after.
	runErr, drainErr error
}

func (l *lifecycle) init() {
	l.started = make(chan struct{})
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
}

// Start starts the admin API (if the config has an admin_listen) and the
// consumers, and returns once they run: from then on Ready reports true
// and Started is closed. If the admin listener cannot be opened or ctx
// has ended, it returns the error having closed everything New opened (the
// server is then stopped and Done closed). It returns ErrStarted or
// ErrStopped if called twice or after Stop. ctx only bounds starting; the
// server runs until Stop.
func (s *Server) Start(ctx context.Context) error {
	l := &s.life
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case stateRunning, stateStopping:
		return ErrStarted
	case stateStopped:
		return ErrStopped
	}
	ln, err := s.listen()
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("server: start: %w", ctx.Err())
		if ln != nil && ln != s.opts.Listener {
			_ = ln.Close()
		}
	}
	if err != nil {
		l.state = stateStopped
		s.close(context.Background())
		l.runErr = err
		close(l.done)
		return err
	}
	var srv *http.Server
	srvErr := make(chan error, 1)
	if ln != nil {
		srv = &http.Server{
			Handler:           admin.Handler(s.adminOptions()),
			ReadHeaderTimeout: 10 * time.Second,
		}
		s.addr.Store(ln.Addr().String())
		go func() { srvErr <- srv.Serve(ln) }()
		s.log.Info("admin API listening", zap.String("addr", ln.Addr().String()))
	}
	engineCount := s.startConsumers()
	s.startSchedules(s.reload.applied)
	s.ready.Store(true)
	l.state = stateRunning
	close(l.started)
	s.log.Info("qrun running", zap.Int("engines", engineCount), zap.Int("queues", len(*s.queues.Load())), zap.Int("consumers", len(s.consumerList())))
	go s.serve(srv, srvErr)
	return nil
}

// serve waits for Stop (or the admin API failing) and then shuts down:
// consumers stop receiving, deliveries in progress get until the drain
// timeout or Stop's ctx ends, whichever is first, the rest are released
// for redelivery, and everything is closed.
func (s *Server) serve(srv *http.Server, srvErr <-chan error) {
	l := &s.life
	var runErr error
	select {
	case <-l.stop:
	case err := <-srvErr:
		runErr = fmt.Errorf("admin API: %w", err)
	}
	l.mu.Lock()
	l.state = stateStopping
	stopCtx := l.stopCtx
	l.mu.Unlock()
	if stopCtx == nil {
		stopCtx = context.Background()
	}
	s.ready.Store(false)
	s.beginShutdown() // waits for a reload in progress; none starts after
	drainTimeout := time.Duration(s.reload.drainTimeout.Load())
	s.log.Info("draining", zap.Duration("drain_timeout", drainTimeout))
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(stopCtx), drainTimeout)
	stopAfter := context.AfterFunc(stopCtx, cancel)
	drainErr := s.stopConsumers(drainCtx, s.consumerList())
	stopAfter()
	cancel()
	if srv != nil {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(shutCtx)
		cancel()
	}
	s.close(context.Background())
	if drainErr != nil {
		s.log.Warn("drain timed out; the deliveries still running were stopped and released for redelivery", zap.Error(drainErr))
		drainErr = fmt.Errorf("server: drain: %w", drainErr)
	} else if runErr == nil {
		s.log.Info("drained")
	}
	l.mu.Lock()
	l.state = stateStopped
	l.runErr, l.drainErr = runErr, drainErr
	l.mu.Unlock()
	close(l.done)
}

// Stop shuts the server down gracefully and waits until it has: consumers
// stop receiving, deliveries in progress may finish until the config's
// drain timeout or ctx ends, whichever comes first, the rest are released
// for redelivery, and plugins, queues and engines are closed. It returns
// nil after a clean drain, an error wrapping the drain's when deliveries
// had to be released, or ctx's error if ctx ended before the shutdown did
// (it then still completes in the background; Done tells when). A Server
// that was never started is just closed. Calling Stop again waits for the
// same shutdown.
func (s *Server) Stop(ctx context.Context) error {
	l := &s.life
	l.mu.Lock()
	switch l.state {
	case stateNew:
		l.state = stateStopped
		l.mu.Unlock()
		s.close(ctx)
		close(l.done)
		return nil
	case stateRunning:
		l.state = stateStopping
		l.stopCtx = ctx
		close(l.stop)
	}
	l.mu.Unlock()
	select {
	case <-l.done:
		return errors.Join(l.runErr, l.drainErr)
	case <-ctx.Done():
		return fmt.Errorf("server: stop: %w", ctx.Err())
	}
}

// Started is closed once Start has succeeded. A caller waiting for it
// should also wait on Done, which closes instead if Start fails.
func (s *Server) Started() <-chan struct{} { return s.life.started }

// Done is closed once the server has stopped and closed everything: after
// Stop, after Run returns, after a failed Start, or when the admin API
// fails (then Err says why).
func (s *Server) Done() <-chan struct{} { return s.life.done }

// Err is why the server stopped on its own (the admin API failed, or
// Start could not listen); nil while it runs and after a requested stop.
func (s *Server) Err() error {
	select {
	case <-s.life.done:
		return s.life.runErr
	default:
		return nil
	}
}

// Run is Start, then waits until ctx ends and stops with a drain bounded
// by the config's drain timeout: the blocking form cmd/qrun uses. It
// returns nil after a drain, even one that had to release deliveries
// (which is logged), and the error that stopped the server otherwise.
func (s *Server) Run(ctx context.Context) error {
	// A ctx that ended already still gets a start and a drain, as a
	// signal arriving between New and Run should.
	if err := s.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		_ = s.Stop(context.Background())
	case <-s.life.done:
	}
	<-s.life.done
	return s.life.runErr
}
