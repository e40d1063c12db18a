package server

import (
	"github.com/qrun-dev/qrun/runtime/internal/dispatch"
	"github.com/qrun-dev/qrun/runtime/internal/metrics"
	"github.com/qrun-dev/qrun/runtime/plugin"
)

// Views into a Server for this package's external tests. They return
// implementation types, which is why they are not part of the API.

// Consumers returns the running consumers' dispatchers.
func (s *Server) Consumers() []*dispatch.Consumer {
	cs := s.consumerList()
	out := make([]*dispatch.Consumer, len(cs))
	for i, c := range cs {
		out[i] = c.d
	}
	return out
}

// Live returns the named consumer's plugin, to follow its versions.
func (s *Server) Live(name string) (*plugin.Live, bool) {
	for _, c := range s.consumerList() {
		if c.cfg.Name == name {
			return c.live, true
		}
	}
	return nil, false
}

// Metrics returns the server's metrics, nil when it keeps none.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// ConsumerSamples is what a scrape reads of the consumers.
func (s *Server) ConsumerSamples() []metrics.ConsumerSample { return s.consumerSamples() }
