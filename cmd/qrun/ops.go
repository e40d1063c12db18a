package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// The operator commands (stats, consumers, dlq, pause, resume) are clients
// of a running qrun's admin API; they find it from the config file
// (runtime.admin_listen and admin_token) or from --addr and --token.

// tokenEnv names the environment variable holding the admin token.
const tokenEnv = "QRUN_ADMIN_TOKEN"

// defaultAdminAddr is the config's default admin_listen.
const defaultAdminAddr = "127.0.0.1:8787"

// adminFlags are the flags every admin client command takes.
type adminFlags struct {
	path, addr, token string
	timeout           time.Duration
}

func addAdminFlags(fs *pflag.FlagSet) *adminFlags {
	a := &adminFlags{}
	fs.StringVarP(&a.path, "config", "c", "", "config `FILE` of the running qrun (for its admin address and token)")
	fs.StringVar(&a.addr, "addr", "", "admin API `address` (host:port or URL); default from -c, else "+defaultAdminAddr)
	fs.StringVar(&a.token, "token", "", "admin bearer `token`; default $"+tokenEnv+", else the config's admin_token")
	fs.DurationVar(&a.timeout, "timeout", 30*time.Second, "give up on a request after this `duration`")
	return a
}

// client builds the API client the flags describe.
func (a *adminFlags) client(stderr io.Writer) (*admin.Client, error) {
	addr, token := a.addr, a.token
	var err error
	if a.path != "" {
		cfg, diags := config.Load(a.path, config.Options{Engines: server.Builtin()})
		if diags.HasErrors() {
			_ = config.WriteDiagnostics(stderr, cfg, diags, isTerminal(stderr))
			return nil, usageError{errInvalidConfig}
		}
		if addr == "" {
			if addr, err = adminURL(cfg, a.path, ", so qrun cannot be reached"); err != nil {
				return nil, err
			}
		}
		if token == "" && os.Getenv(tokenEnv) == "" {
			token = cfg.Runtime.AdminToken
		}
	}
	if addr == "" {
		addr = defaultAdminAddr
	}
	if token == "" {
		token = os.Getenv(tokenEnv)
	}
	return &admin.Client{BaseURL: baseURL(addr), Token: token}, nil
}

// fetch makes one admin API call, get, with the client the flags describe
// and a context bounded by --timeout; a failed call is explained by
// apiError. Commands that make one call use it; dlq, which makes two on one
// context, builds its own.
func fetch[T any](af *adminFlags, stderr io.Writer, get func(c *admin.Client, ctx context.Context) (T, error)) (T, error) {
	var zero T
	c, err := af.client(stderr)
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	v, err := get(c, ctx)
	if err != nil {
		return zero, apiError(c, err)
	}
	return v, nil
}

// adminURL is where the qrun running cfg (read from path) serves its admin
// API; hint ends the error when the config disables it.
func adminURL(cfg *config.File, path, hint string) (string, error) {
	addr := cfg.Runtime.AdminListen
	if addr == "" || addr == "off" {
		return "", usagef("%s: the admin API is disabled (runtime.admin_listen)%s", path, hint)
	}
	return baseURL(addr), nil
}

// baseURL turns a listen address into a URL to dial: a wildcard host
// (":8787", "0.0.0.0:8787") is reached on loopback.
func baseURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimRight(addr, "/")
	}
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return "http://" + addr
}

// apiError explains an API failure; a connection failure gets a hint.
func apiError(c *admin.Client, err error) error {
	var se *admin.StatusError
	if err == nil || errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("%w (is qrun running with its admin API at %s?)", err, c.BaseURL)
}

func writeJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdStats(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	watch := fs.Bool("watch", false, "refresh like top until interrupted")
	interval := fs.Duration("interval", time.Second, "refresh `interval` with --watch")
	count := fs.Int("count", 0, "with --watch, stop after `N` refreshes (0: until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON (one object per refresh with --watch)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("stats takes no arguments, got %q", pos)
	}
	if *interval <= 0 {
		return usagef("--interval must be positive")
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tty := isTerminal(stdout)
	var prev []admin.QueueInfo
	var prevAt time.Time
	for i := 0; ; i++ {
		rctx, cancel := context.WithTimeout(ctx, af.timeout)
		qs, err := c.Queues(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return apiError(c, err)
		}
		now := time.Now()
		switch {
		case *asJSON:
			if err := json.NewEncoder(stdout).Encode(map[string]any{"time": now, "queues": qs}); err != nil {
				return err
			}
		default:
			if *watch && tty {
				fmt.Fprint(stdout, "\x1b[H\x1b[2J") // home and clear, like top
			} else if i > 0 {
				fmt.Fprintln(stdout)
			}
			if *watch {
				fmt.Fprintf(stdout, "qrun stats  %s  %s  every %v, Ctrl-C quits\n\n", c.BaseURL, now.Format("15:04:05"), *interval)
			}
			printQueues(stdout, qs, prev, now.Sub(prevAt), *watch)
		}
		if !*watch || (*count > 0 && i+1 >= *count) {
			return nil
		}
		prev, prevAt = qs, now
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

// printQueues prints the queue table; with a previous sample it adds the
// enqueue and settle rates over the interval.
func printQueues(w io.Writer, qs, prev []admin.QueueInfo, dt time.Duration, rates bool) {
	before := map[string]admin.QueueInfo{}
	for _, q := range prev {
		before[q.Name] = q
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hdr := "QUEUE\tENGINE\tREADY\tDELAYED\tIN FLIGHT\tDEPTH\tENQUEUED\tACKED\tNACKED\tDEAD"
	if rates {
		hdr += "\tIN/S\tACK/S"
	}
	fmt.Fprintln(tw, hdr)
	for _, q := range qs {
		s := q.Stats
		name := q.Name
		if q.DeadLetter != "" {
			name += " -> " + q.DeadLetter
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d", name, q.Engine, s.Ready, s.Delayed, s.InFlight, q.Depth,
			s.EnqueuedTotal, s.AckedTotal, s.NackedTotal, s.DeadLetteredTotal)
		if rates {
			p, ok := before[q.Name]
			if ok && dt > 0 {
				fmt.Fprintf(tw, "\t%.0f\t%.0f", float64(s.EnqueuedTotal-p.Stats.EnqueuedTotal)/dt.Seconds(),
					float64(s.AckedTotal-p.Stats.AckedTotal)/dt.Seconds())
			} else {
				fmt.Fprint(tw, "\t-\t-")
			}
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

func cmdConsumers(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	cs, err := fetch(af, stderr, (*admin.Client).Consumers)
	if err != nil {
		return err
	}
	if len(pos) > 0 { // names filter the list
		keep := cs[:0]
		for _, ci := range cs {
			for _, p := range pos {
				if ci.Name == p {
					keep = append(keep, ci)
				}
			}
		}
		cs = keep
	}
	if *asJSON {
		return writeJSONTo(stdout, map[string]any{"consumers": cs})
	}
	printConsumers(stdout, cs)
	return nil
}

func printConsumers(w io.Writer, cs []admin.ConsumerInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tQUEUE\tSTATE\tVERSION\tCONC\tINSTANCES\tIN FLIGHT\tACKED\tNACKED\tREQUEUED\tDEAD\tTRAPS\tTIMEOUTS\tERRORS")
	for _, c := range cs {
		n := c.Counts
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.Name, c.Queue, c.State, c.Version,
			c.Concurrency, c.Instances, c.InFlight, n.Acked, n.Nacked, n.Requeued, n.DeadLettered, n.Traps, n.Timeouts,
			n.EngineErrors+n.InstanceErrors+n.BadVerdicts+n.LeaseLost)
	}
	_ = tw.Flush()
	printThrottles(w, cs)
	for _, c := range cs {
		if len(c.RecentErrors) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nrecent errors of %s (newest first):\n", c.Name)
		for _, e := range c.RecentErrors {
			what := e.Kind
			if e.MessageID != "" {
				what += fmt.Sprintf(" message %s attempt %d", e.MessageID, e.Attempt)
			}
			fmt.Fprintf(w, "  %s  %s: %s\n", e.Time.Local().Format("15:04:05.000"), what, oneLine(e.Error, 200))
		}
	}
}

// oneLine flattens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// cmdPauseResume implements qrun pause and qrun resume.
func cmdPauseResume(name string, fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("%s takes one CONSUMER, got %d arguments", name, len(pos))
	}
	call := (*admin.Client).Pause
	if name == "resume" {
		call = (*admin.Client).Resume
	}
	info, err := fetch(af, stderr, func(c *admin.Client, ctx context.Context) (admin.ConsumerInfo, error) {
		return call(c, ctx, pos[0])
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "consumer %s: %s\n", info.Name, info.State)
	return nil
}

// cmdDLQ implements the dlq subcommands list, show, redrive and purge.
func cmdDLQ(sub string, fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var ids idList
	limit := new(int)
	yes := new(bool)
	switch sub {
	case "list":
	case "show":
		fs.IntVarP(limit, "limit", "n", admin.DefaultPeekLimit, "show at most `N` messages")
	case "redrive":
		fs.Var(&ids, "id", "redrive only the message with this `ID` (repeatable); default all")
	case "purge":
		fs.BoolVar(yes, "yes", false, "really delete every message of the dead-letter queue")
	default:
		return fmt.Errorf("dlq %q: no such subcommand in the command table", sub)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case sub == "list" && len(pos) != 0:
		return usagef("dlq list takes no arguments, got %q", pos)
	case sub != "list" && len(pos) != 1:
		return usagef("dlq %s takes one QUEUE, got %d arguments", sub, len(pos))
	}
	if sub == "purge" && !*yes {
		return usagef("dlq purge deletes messages for good: add --yes")
	}
	c, err := af.client(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	qs, err := c.Queues(ctx)
	if err != nil {
		return apiError(c, err)
	}
	if sub == "list" {
		return listDLQs(stdout, qs, *asJSON)
	}
	dlq, err := resolveDLQ(qs, pos[0])
	if err != nil {
		return err
	}
	switch sub {
	case "show":
		r, err := c.Peek(ctx, dlq, *limit)
		if err != nil {
			return apiError(c, err)
		}
		if *asJSON {
			return writeJSONTo(stdout, r)
		}
		printMessages(stdout, r)
	case "redrive":
		r, err := c.Redrive(ctx, dlq, ids)
		if err != nil {
			return apiError(c, err)
		}
		fmt.Fprintf(stdout, "redrove %d message(s) from %s\n", r.Redriven, dlq)
		if len(ids) > 0 && r.Redriven < len(ids) {
			fmt.Fprintf(stderr, "qrun: %d of the %d IDs were not in %s\n", len(ids)-r.Redriven, len(ids), dlq)
		}
	case "purge":
		r, err := c.Purge(ctx, dlq)
		if err != nil {
			return apiError(c, err)
		}
		fmt.Fprintf(stdout, "purged %d message(s) from %s\n", r.Purged, dlq)
	}
	return nil
}

// idList collects repeated --id flags.
type idList []string

// String implements pflag.Value.
func (l *idList) String() string { return strings.Join(*l, ",") }

// Type implements pflag.Value.
func (l *idList) Type() string { return "ID" }

// Set implements pflag.Value.
func (l *idList) Set(s string) error {
	if s == "" {
		return errors.New("empty id")
	}
	*l = append(*l, s)
	return nil
}

// resolveDLQ accepts a dead-letter queue or a queue that has one.
func resolveDLQ(qs []admin.QueueInfo, name string) (string, error) {
	isDLQ := false
	for _, q := range qs {
		if q.DeadLetter == name {
			isDLQ = true
		}
	}
	for _, q := range qs {
		if q.Name != name {
			continue
		}
		if !isDLQ && q.DeadLetter != "" {
			return q.DeadLetter, nil
		}
		return name, nil
	}
	return "", fmt.Errorf("no queue %q (see qrun dlq list)", name)
}

// dlqInfo is one dead-letter queue as dlq list shows it.
type dlqInfo struct {
	Queue   string   `json:"queue"`
	Sources []string `json:"sources"`
	Depth   int64    `json:"depth"`
	Engine  string   `json:"engine"`
}

func listDLQs(w io.Writer, qs []admin.QueueInfo, asJSON bool) error {
	by := map[string]*dlqInfo{}
	for _, q := range qs {
		if q.DeadLetter != "" {
			d := by[q.DeadLetter]
			if d == nil {
				d = &dlqInfo{Queue: q.DeadLetter}
				by[q.DeadLetter] = d
			}
			d.Sources = append(d.Sources, q.Name)
		}
	}
	out := make([]dlqInfo, 0, len(by))
	for _, q := range qs {
		if d := by[q.Name]; d != nil {
			d.Depth, d.Engine = q.Depth, q.Engine
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Queue < out[j].Queue })
	if asJSON {
		return writeJSONTo(w, map[string]any{"dead_letter_queues": out})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEAD-LETTER QUEUE\tENGINE\tMESSAGES\tFROM")
	for _, d := range out {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", d.Queue, d.Engine, d.Depth, strings.Join(d.Sources, ", "))
	}
	return tw.Flush()
}

func printMessages(w io.Writer, r admin.PeekResponse) {
	if len(r.Messages) == 0 {
		fmt.Fprintf(w, "%s is empty\n", r.Queue)
		return
	}
	for i := range r.Messages {
		_ = printPeeked(w, &r.Messages[i])
	}
}
