package httpout

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// LatencyBuckets are the upper bounds, in seconds, of the latency
// histogram: from a keep-alive request on the same machine to a request
// that used up a long timeout.
func LatencyBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
}

// HostCount is the number of requests that went to one allow-list entry
// and ended in one class.
type HostCount struct {
	// Host is the allow-list entry as written (not the guest's host name,
	// so a guest cannot create unbounded metric series with a wildcard).
	Host string
	// Class is "2xx", "3xx", "4xx", "5xx", "1xx" or "error" (no response:
	// timeout, connection failed, too large).
	Class string
	// N is the number of requests.
	N uint64
}

// Stats is a snapshot of a client's counters since it was created.
type Stats struct {
	// Requests counts the requests that were sent, by entry and class.
	Requests []HostCount
	// Denied counts requests refused by the allow list, at the URL, at a
	// redirect or at dial time.
	Denied uint64
	// OverBudget counts requests refused because the delivery had used up
	// its max_requests.
	OverBudget uint64
	// Latency is a histogram of sent requests' durations: Counts[i] is the
	// number that took at most LatencyBuckets()[i] and more than the bound
	// before it; the last element counts the rest.
	LatencyCounts []uint64
	LatencySum    time.Duration
}

type hostClass struct{ host, class string }

type stats struct {
	mu         sync.Mutex
	requests   map[hostClass]uint64
	denied     uint64
	overBudget uint64
	bounds     []float64
	lat        []uint64
	latSum     time.Duration
}

func (s *stats) init() {
	s.requests = make(map[hostClass]uint64)
	s.bounds = LatencyBuckets()
	s.lat = make([]uint64, len(s.bounds)+1)
}

// Stats returns a snapshot of the counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	out := Stats{Denied: s.denied, OverBudget: s.overBudget, LatencyCounts: slices.Clone(s.lat), LatencySum: s.latSum}
	for k, n := range s.requests {
		out.Requests = append(out.Requests, HostCount{Host: k.host, Class: k.class, N: n})
	}
	slices.SortFunc(out.Requests, func(a, b HostCount) int {
		if a.Host != b.Host {
			if a.Host < b.Host {
				return -1
			}
			return 1
		}
		if a.Class < b.Class {
			return -1
		}
		if a.Class > b.Class {
			return 1
		}
		return 0
	})
	return out
}

// OverBudget counts and logs a request the plugin host refused because the
// delivery reached MaxRequests.
func (c *Client) OverBudget(messageID, rawURL string) {
	c.stats.mu.Lock()
	c.stats.overBudget++
	c.stats.mu.Unlock()
	c.logFailure(messageID, rawURL, 0, errors.New("max_requests per delivery reached"))
}

// record counts one finished request and logs it if it failed.
func (c *Client) record(r *Request, t target, resp *Response, err error, took time.Duration) {
	s := &c.stats
	s.mu.Lock()
	switch {
	case errors.Is(err, ErrDenied):
		s.denied++
	case errors.Is(err, ErrInvalid) || t.rule == nil:
		// Never sent: neither a host nor a latency to count.
	default:
		class := "error"
		if err == nil {
			class = strconv.Itoa(resp.Status/100) + "xx"
		}
		s.requests[hostClass{t.rule.Text, class}]++
		i, _ := slices.BinarySearch(s.bounds, took.Seconds())
		s.lat[i]++
		s.latSum += took
	}
	s.mu.Unlock()
	host := t.host
	if host == "" {
		host = r.URL
	}
	switch {
	case err != nil:
		c.logFailure(r.MessageID, host, 0, err)
	case resp.Status >= 400:
		c.logFailure(r.MessageID, host, resp.Status, nil)
	}
}

// logFailure writes one rate-limited line per failed request.
func (c *Client) logFailure(messageID, host string, status int, err error) {
	ok, suppressed := c.logLimit.allow(time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("message_id", messageID), zap.String("host", host)}
	if err != nil {
		fields = append(fields, zap.Error(err))
	} else {
		fields = append(fields, zap.Int("status", status))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Uint64("suppressed", suppressed))
	}
	c.log.Warn("outbound http request failed", fields...)
}

// limiter allows rate events per wall-clock second and counts the rest,
// which the next allowed event reports.
type limiter struct {
	mu         sync.Mutex
	rate       int
	sec        int64
	n          int
	suppressed uint64
}

func (l *limiter) allow(now time.Time) (bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.sec {
		l.sec, l.n = s, 0
	}
	if l.n >= l.rate {
		l.suppressed++
		return false, 0
	}
	l.n++
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
