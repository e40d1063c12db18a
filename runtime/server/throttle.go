package server

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/throttle"
)

// newThrottle builds consumer cc's throttle on queue q; nil without
// limits. A global rate limit draws on a bucket the queue's engine keeps
// (engines.RateTaker), named after the consumer, so every process running
// the consumer shares it. A global per-key cap likewise takes slots the
// engine keeps (engines.SlotKeeper), grouped by consumer.
func (s *Server) newThrottle(cc *config.Consumer, q *queue) *throttle.Throttle {
	t := cc.Throttle
	cfg := throttle.Config{
		Rate: t.Rate, Burst: t.Burst, RateKey: t.RateKey,
		MaxInFlightPerKey: t.MaxInFlightPerKey, ConcurrencyKey: t.ConcurrencyKey,
	}
	if t.RateScope == config.RateScopeGlobal && t.Rate > 0 {
		rt, ok := s.engines[q.engine].(engines.RateTaker)
		if !ok {
			// Validation refuses engines not shared across machines; one
			// from elsewhere that is, but keeps no buckets, limits per node.
			s.log.Warn("engine keeps no shared rate buckets: the consumer's rate limit holds per node",
				zap.String("consumer", cc.Name), zap.String("engine", q.engine))
		} else {
			bucket, rate, burst := "consumer/"+cc.Name, t.Rate, t.Burst
			cfg.Take = func(ctx context.Context, n int) (int, time.Duration, error) {
				return rt.TakeTokens(ctx, bucket, rate, burst, n)
			}
		}
	}
	if t.ConcurrencyScope == config.RateScopeGlobal && t.MaxInFlightPerKey > 0 {
		sk, ok := s.engines[q.engine].(engines.SlotKeeper)
		if !ok {
			// Validation refuses engines whose settings keep no slots; one
			// whose opened engine does not either caps per node.
			s.log.Warn("engine keeps no shared slots: the consumer's per-key cap holds per node",
				zap.String("consumer", cc.Name), zap.String("engine", q.engine))
		} else {
			group, n := "consumer/"+cc.Name, t.MaxInFlightPerKey
			cfg.Slot = func(ctx context.Context, key string) (func(), bool, error) {
				return sk.TakeSlot(ctx, group, key, n)
			}
		}
	}
	return throttle.New(cfg)
}

// throttleInfo reports a consumer's throttle for the admin API.
func throttleInfo(v consumerView) *admin.ThrottleInfo {
	st, ok := v.c.ThrottleStats()
	if !ok || v.running == nil {
		return nil
	}
	t := v.running.cfg.Throttle
	return &admin.ThrottleInfo{
		RateLimit: t.RateText, Burst: t.Burst, RateLimitKey: t.RateKey, RateLimitScope: scope(t),
		MaxInFlightPerKey: t.MaxInFlightPerKey, ConcurrencyKey: t.ConcurrencyKey, ConcurrencyScope: t.ConcurrencyScope,
		Waiting: st.Waiting, Throttled: st.Throttled, ThrottledSeconds: st.ThrottledSeconds, Keys: st.Keys, TakeErrors: st.TakeErrors,
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

// scope is a rate limit's scope for the admin API; none without a rate.
func scope(t config.Throttle) string {
	if t.Rate == 0 {
		return ""
	}
	return t.RateScope
}
