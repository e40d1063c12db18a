package server

import (
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
)

// newThrottle builds a consumer's throttle; nil without limits.
func newThrottle(t config.Throttle) *throttle.Throttle {
	return throttle.New(throttle.Config{
		Rate: t.Rate, Burst: t.Burst, RateKey: t.RateKey,
		MaxInFlightPerKey: t.MaxInFlightPerKey, ConcurrencyKey: t.ConcurrencyKey,
	})
}

// throttleInfo reports a consumer's throttle for the admin API.
func throttleInfo(v consumerView) *admin.ThrottleInfo {
	st, ok := v.c.ThrottleStats()
	if !ok || v.running == nil {
		return nil
	}
	t := v.running.cfg.Throttle
	return &admin.ThrottleInfo{
		RateLimit: t.RateText, Burst: t.Burst, RateLimitKey: t.RateKey,
		MaxInFlightPerKey: t.MaxInFlightPerKey, ConcurrencyKey: t.ConcurrencyKey,
		Waiting: st.Waiting, Throttled: st.Throttled, ThrottledSeconds: st.ThrottledSeconds, Keys: st.Keys,
	}
}

// throttleSample is a consumer's throttle for metrics.
func throttleSample(c interface {
	ThrottleStats() (throttle.Stats, bool)
}) *throttle.Stats {
	st, ok := c.ThrottleStats()
	if !ok {
		return nil
	}
	return &st
}
