package server

import (
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/internal/schedule"
)

// scheduleDir holds the tick files of schedules on engines that store no
// ticks themselves (schedule.FileClaimer), under the data directory.
const scheduleDir = "schedules"

// startSchedules (re)starts the schedules of cfg on the open queues: at
// Start, and after a reload is committed. Ticks are claimed through the
// queue's engine when it is an engines.TickClaimer, else in a file.
func (s *Server) startSchedules(cfg *config.File) {
	queues := *s.queues.Load()
	var jobs []schedule.Job
	for i := range cfg.Schedules {
		sc := &cfg.Schedules[i]
		q, ok := queues[sc.Queue]
		if !ok {
			s.log.Error("schedule's queue is not open; schedule not started", zap.String("schedule", sc.Name), zap.String("queue", sc.Queue))
			continue
		}
		spec, err := scheduleSpec(sc)
		if err != nil { // validated already; only a vanished zone database
			s.log.Error("schedule not started", zap.String("schedule", sc.Name), zap.Error(err))
			continue
		}
		var cl schedule.Claimer = &schedule.FileClaimer{Dir: filepath.Join(cfg.Runtime.DataDir, scheduleDir), Queue: q.q}
		if tc, ok := s.engines[q.engine].(engines.TickClaimer); ok {
			cl = schedule.EngineClaimer{TC: tc, Queue: q.q}
		}
		jobs = append(jobs, schedule.Job{Spec: spec, Claimer: cl})
	}
	s.sched.Set(jobs)
}

// stopSchedules ends the schedules before the engines close.
func (s *Server) stopSchedules() {
	s.sched.Close()
}

// scheduleSpec converts a schedule block for the scheduler.
func scheduleSpec(sc *config.Schedule) (schedule.Spec, error) {
	spec := schedule.Spec{
		Name: sc.Name, Queue: sc.Queue, SkipMissed: sc.Missed == config.MissedSkip,
		Message: engines.Message{Body: []byte(sc.Body), Attributes: sc.Attributes, ContentType: sc.ContentType},
	}
	var err error
	if sc.Cron != "" {
		spec.Expr = sc.Cron
		var loc *time.Location
		if loc, err = time.LoadLocation(sc.TimeZone); err == nil {
			spec.Timing, err = schedule.ParseCron(sc.Cron, loc)
		}
	} else {
		spec.Expr = "every " + shortDuration(sc.Every)
		spec.Timing, err = schedule.Every(sc.Every)
	}
	return spec, err
}

// Schedules lists the schedules with their next fire times, for the admin
// API's GET /v1/schedules and `qrun schedules`.
func (s *Server) Schedules() []admin.ScheduleInfo {
	st := s.sched.List()
	out := make([]admin.ScheduleInfo, len(st))
	for i, x := range st {
		out[i] = admin.ScheduleInfo{Name: x.Name, Queue: x.Queue, Expr: x.Expr, TimeZone: x.TimeZone, Next: x.Next,
			LastTick: x.LastTick, Fired: x.Fired, Skipped: x.Skipped, LastError: x.LastError}
	}
	return out
}

// shortDuration writes d without zero trailing units: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
