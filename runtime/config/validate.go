package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/agext/levenshtein"
	"github.com/hashicorp/hcl/v2"
)

// validate checks what no single block can: references between blocks,
// dead-letter cycles and plugin files. It tolerates the partial results of a
// decode that already failed, so every problem is reported in one run.
func (d *decoder) validate() {
	f := d.file
	engineNames := make([]string, 0, len(f.Engines))
	for _, e := range f.Engines {
		engineNames = append(engineNames, e.Name)
	}
	queueNames := make([]string, 0, len(f.Queues))
	d.queueIdx = make(map[string]int, len(f.Queues))
	for i, q := range f.Queues {
		queueNames = append(queueNames, q.Name)
		d.queueIdx[q.Name] = i // names are unique: decode drops duplicates
	}

	for i := range f.Queues {
		q := &f.Queues[i]
		refs := d.queueRefs[q.Name]
		engineOK := q.Engine != "" && slices.Contains(engineNames, q.Engine)
		if q.Engine != "" && !engineOK {
			d.errorf(refs.engine.Expr.Range(), "Unknown engine",
				"Queue %q uses engine %q, which is not declared.%s Declare it with engine %q { type = ... }.",
				q.Name, q.Engine, didYouMean(q.Engine, engineNames), q.Engine)
		}
		if rule := d.nameRules[q.Engine]; rule != nil && validName(q.Name) {
			if err := rule(q.Name); err != nil {
				d.errorf(refs.name, "Invalid name", "Queue %q cannot live in engine %q: %v. The name is never shortened or altered to fit.", q.Name, q.Engine, err)
			}
		}
		if c, ok := d.caps[q.Engine]; ok && q.Ordered && !c.Ordering && refs.ordered != nil {
			d.errorf(refs.ordered.Expr.Range(), "Ordered delivery unsupported",
				"Queue %q asks for ordered delivery, which engine %q cannot give. Use an engine that keeps order per key (memory, disk or postgres), or drop ordered.", q.Name, q.Engine)
		}
		if q.DeadLetter == "" {
			continue
		}
		rng := refs.deadLetter.Expr.Range()
		dl, ok := d.queueNamed(q.DeadLetter)
		switch {
		case q.DeadLetter == q.Name:
			d.errorf(rng, "Queue is its own dead-letter queue",
				"Queue %q names itself as dead_letter, so exhausted messages would be retried forever. Declare a separate queue, e.g. %q.", q.Name, q.Name+"_dead")
		case !ok:
			d.errorf(rng, "Unknown queue",
				"dead_letter names queue %q, which is not declared.%s", q.DeadLetter, didYouMean(q.DeadLetter, queueNames))
		case engineOK && dl.Engine != q.Engine && slices.Contains(engineNames, dl.Engine):
			d.errorf(rng, "Dead-letter queue on a different engine",
				"A dead-letter queue must be on the same engine as its queue, because the engine moves messages into it atomically: %q is on engine %q but %q is on %q.",
				q.DeadLetter, dl.Engine, q.Name, q.Engine)
		}
	}
	d.deadLetterCycles()
	d.validateKV(engineNames)
	for i := range f.Consumers {
		c := &f.Consumers[i]
		refs := d.consumerRefs[c.Name]
		if c.Queue != "" {
			if q, ok := d.queueNamed(c.Queue); !ok {
				d.errorf(refs.queue.Expr.Range(), "Unknown queue",
					"Consumer %q reads queue %q, which is not declared.%s", c.Name, c.Queue, didYouMean(c.Queue, queueNames))
			} else if d.topics[q.Engine][q.Name] {
				d.errorf(refs.queue.Expr.Range(), "Consumer reads a topic",
					"Consumer %q reads %q, which is a topic of engine %q: a topic is published to, never received from. Consume one of its subscriptions instead.", c.Name, c.Queue, q.Engine)
			} else if q.VisibilityTimeout > 0 && 2*c.Timeout >= q.VisibilityTimeout {
				// A call may run up to twice its timeout before the host
				// stops it (abi/ABI.md section 6).
				subject := c.Range
				if refs.timeout != nil {
					subject = refs.timeout.Expr.Range()
				}
				d.warnf(subject, "Timeout exceeds visibility timeout",
					"Consumer %q may run for up to %s (twice its timeout) but queue %q leases messages for %s, so a slow message can be delivered twice. Lower timeout or raise visibility_timeout.",
					c.Name, 2*c.Timeout, q.Name, q.VisibilityTimeout)
			}
		}
		for j, name := range c.Publish {
			if _, ok := d.queueNamed(name); !ok {
				d.errorf(refs.publish[j], "Unknown queue",
					"Consumer %q may publish to queue %q, which is not declared.%s", c.Name, name, didYouMean(name, queueNames))
			}
		}
		d.validateGrants(c, refs)
		if c.Plugin != "" || c.PluginWasm != nil {
			d.checkPlugin(c)
		}
	}
	d.validateSchedules(queueNames)
	d.validateThrottles()
	if len(f.Queues) == 0 && len(f.Consumers) == 0 && !d.diags.HasErrors() {
		// Valid, but a qrun that does nothing: most likely the wrong file.
		// (A file with errors has more pressing news.)
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Nothing configured",
			Detail:   "The file declares no queue and no consumer, so qrun would run idle. Declare an engine, a queue and a consumer (see config.hcl.example).",
			Subject:  &hcl.Range{Filename: f.Path, Start: hcl.InitialPos, End: hcl.InitialPos},
		})
	}
}

// deadLetterCycles reports every cycle of two or more queues once, at the
// dead_letter of its first-declared member. Each queue has at most one
// dead-letter edge, so following the chain from each queue finds them all.
// Self references are reported by validate and never enter a chain.
func (d *decoder) deadLetterCycles() {
	f := d.file
	reported := map[string]bool{}
	for _, start := range f.Queues {
		var path []string
		cur := start.Name
		for !reported[cur] {
			if idx := slices.Index(path, cur); idx >= 0 {
				cycle := path[idx:]
				for _, n := range cycle {
					reported[n] = true
				}
				// Name the cycle from its first-declared member, so the
				// report does not depend on which queue led into it.
				first := 0
				for k, n := range cycle {
					if d.queueIndex(n) < d.queueIndex(cycle[first]) {
						first = k
					}
				}
				cycle = append(cycle[first:len(cycle):len(cycle)], cycle[:first]...)
				d.errorf(d.queueRefs[cycle[0]].deadLetter.Expr.Range(), "Dead-letter cycle",
					"Dead-letter queues form a cycle (%s -> %s), so a message that keeps failing would circle forever. End the chain at a queue without dead_letter.",
					strings.Join(cycle, " -> "), cycle[0])
				break
			}
			path = append(path, cur)
			q, ok := d.queueNamed(cur)
			if !ok || q.DeadLetter == "" || q.DeadLetter == q.Name {
				break
			}
			cur = q.DeadLetter
		}
	}
}

func (d *decoder) queueIndex(name string) int {
	if i, ok := d.queueIdx[name]; ok {
		return i
	}
	return -1
}

// queueNamed is File.Queue through an index: validate looks queues up once per
// reference, and a linear search made a file of 30,000 queues take
// seconds.
func (d *decoder) queueNamed(name string) (*Queue, bool) {
	if i, ok := d.queueIdx[name]; ok {
		return &d.file.Queues[i], true
	}
	return nil, false
}

func (d *decoder) checkPlugin(c *Consumer) {
	err := d.pluginError(c)
	var pe *pluginErr
	switch {
	case err == nil:
	case errors.As(err, &pe):
		d.errorf(c.PluginRange, pe.summary, "%s", pe.detail)
	default:
		// The error names the plugin (Options.CheckPlugin).
		d.errorf(c.PluginRange, "Invalid plugin", "%v.", err)
	}
}

// pluginErr is a file-level problem with its own summary, as opposed to an
// error from Options.CheckPlugin.
type pluginErr struct{ summary, detail string }

// Error joins summary and detail.
func (e *pluginErr) Error() string { return e.summary + ": " + e.detail }

func (d *decoder) pluginError(c *Consumer) error {
	if c.PluginWasm != nil {
		if d.opts.CheckPlugin != nil {
			return d.opts.CheckPlugin(d.file, c)
		}
		return nil
	}
	path := c.Plugin
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &pluginErr{"Plugin not found", fmt.Sprintf("No file at %s (relative paths are resolved against the config file's directory, %s).", path, d.file.Dir)}
	case err != nil:
		return &pluginErr{"Invalid plugin", err.Error()}
	case !st.Mode().IsRegular():
		return &pluginErr{"Plugin is not a file", fmt.Sprintf("%s is a %s; plugin must name a compiled .wasm file.", path, modeName(st.Mode()))}
	}
	if d.opts.CheckPlugin != nil {
		return d.opts.CheckPlugin(d.file, c)
	}
	return nil
}

func modeName(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	return "special file"
}

// checkListenAddr accepts host:port with a numeric port, host optional.
// Service names are refused because they depend on /etc/services.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// didYouMean suggests the closest candidate for a likely typo, or "".
func didYouMean(got string, candidates []string) string {
	best, bestDist := "", len(got)/3+2
	for _, c := range candidates {
		if dist := levenshtein.Distance(got, c, nil); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}
