// Command conformance is the Go module of qrun's ABI conformance suite: the
// scripted behaviour of plugins/conformance/README.md, written with the Go
// SDK.
package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	qrun "github.com/qrun-dev/qrun/plugins/sdk/go"
)

// count lives as long as the instance: the "count" command proves it.
var count int

func init() {
	qrun.Init(func() error {
		if v, ok := qrun.Config("refuse"); ok {
			return errors.New("refused by config: " + v)
		}
		return nil
	})
	qrun.Handle(handle)
}

func out(s string) qrun.Verdict {
	if qrun.Publish("out", []byte(s), nil) != nil {
		return qrun.Nack
	}
	return qrun.Ack
}

func orAbsent(v string, ok bool) string {
	if !ok {
		return "<absent>"
	}
	return v
}

func handle(m *qrun.Message) qrun.Verdict {
	cmd, arg, _ := strings.Cut(string(m.Body), ":")
	switch cmd {
	case "verdict":
		n, err := strconv.ParseInt(arg, 10, 32)
		if err != nil {
			return qrun.DeadLetter
		}
		// Any number, bad verdicts included: they are part of the script.
		return qrun.Verdict(n)
	case "trap":
		panic("trap requested")
	case "echo":
		if qrun.Publish("out", []byte(arg), m.Attrs()) != nil {
			return qrun.Nack
		}
		return qrun.Ack
	case "attr":
		return out(orAbsent(m.Attr(arg)))
	case "config":
		return out(orAbsent(qrun.Config(arg)))
	case "id":
		return out(m.ID())
	case "attempt":
		return out(strconv.Itoa(m.Attempt()))
	case "delay":
		ms, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		qrun.SetDelay(time.Duration(ms) * time.Millisecond)
		return qrun.Nack
	case "deadreason":
		return qrun.DeadLetterWith(arg)
	case "nackreason":
		return qrun.NackWith(arg)
	case "pub":
		switch err := qrun.Publish(arg, []byte("x"), nil); {
		case err == nil:
			return out("ok")
		case errors.Is(err, qrun.ErrDenied):
			return out("denied")
		default:
			return out("error")
		}
	case "extend":
		ms, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		if qrun.ExtendLease(time.Duration(ms)*time.Millisecond) != nil {
			return out("error")
		}
		return out("ok")
	case "log":
		qrun.Log(qrun.LevelInfo, arg)
		return qrun.Ack
	case "count":
		count++
		return out(strconv.Itoa(count))
	case "http":
		resp, err := qrun.Fetch(&qrun.Request{Method: "POST", URL: arg, Header: map[string]string{"X-Guest": "yes"}, Body: []byte("ping")})
		if err != nil {
			return out(errWord(err))
		}
		if v := out(strconv.Itoa(resp.Status)); v != qrun.Ack {
			return v
		}
		return out(string(resp.Body))
	case "retry":
		resp, err := qrun.Fetch(&qrun.Request{URL: arg})
		switch {
		case err != nil:
			return qrun.Nack
		case resp.Status >= 200 && resp.Status < 300:
			return qrun.Ack
		}
		return qrun.RetryLater(resp)
	case "kvget":
		return outRead(store.Get(arg))
	case "kvset":
		return outErr(store.Set("k", []byte(arg)))
	case "kvttl":
		ms, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		return outErr(store.SetTTL("k", []byte("t"), time.Duration(ms)*time.Millisecond))
	case "kvver":
		v, err := store.Version("k")
		if err != nil {
			return out(kvWord(err))
		}
		return out(strconv.FormatUint(v, 10))
	case "kvcas":
		v, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		return outErr(store.CompareAndSet("k", v, []byte("cas"), 0))
	case "kvdel":
		return outErr(store.Delete("k"))
	case "kvincr":
		d, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		n, err := store.Incr("k", d)
		if err != nil {
			return out(kvWord(err))
		}
		return out(strconv.FormatInt(n, 10))
	case "kvadd", "kvaddget":
		d, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return qrun.DeadLetter
		}
		if v := outErr(store.Add("k", d)); v != qrun.Ack || cmd == "kvadd" {
			return v
		}
		return outRead(store.Get("k"))
	case "kvrw":
		if err := store.Set("k", []byte(arg)); err != nil {
			return out(kvWord(err))
		}
		return outRead(store.Get("k"))
	case "kvother":
		return outRead(qrun.Store("other").Get("k"))
	case "state":
		if outRead(m.State()) != qrun.Ack {
			return qrun.Nack
		}
		outErr(m.SetState([]byte(arg)))
		return qrun.Nack
	case "httpmany":
		n := 0
		for {
			_, err := qrun.Fetch(&qrun.Request{URL: arg})
			if err != nil {
				if v := out(strconv.Itoa(n)); v != qrun.Ack {
					return v
				}
				return out(errWord(err))
			}
			n++
		}
	}
	return qrun.DeadLetter
}

// store is the one store the consumer is granted.
var store = qrun.Store("kv")

// outRead publishes a value read from a store or the message's state,
// "<absent>", or the error's word.
func outRead(v []byte, err error) qrun.Verdict {
	switch {
	case err == nil:
		return out(string(v))
	case errors.Is(err, qrun.ErrNotFound):
		return out("<absent>")
	}
	return out(kvWord(err))
}

// outErr publishes "ok" for a nil error, else its word.
func outErr(err error) qrun.Verdict {
	if err == nil {
		return out("ok")
	}
	return out(kvWord(err))
}

// kvWord names a failed store or state call's error as the script does.
func kvWord(err error) string {
	switch {
	case errors.Is(err, qrun.ErrDenied):
		return "denied"
	case errors.Is(err, qrun.ErrInvalid):
		return "invalid"
	case errors.Is(err, qrun.ErrTooLarge):
		return "toolarge"
	case errors.Is(err, qrun.ErrConflict):
		return "conflict"
	case errors.Is(err, qrun.ErrUnsupported):
		return "unsupported"
	}
	return "error"
}

// errWord names a failed request's error as the script does.
func errWord(err error) string {
	switch {
	case errors.Is(err, qrun.ErrDenied):
		return "denied"
	case errors.Is(err, qrun.ErrTooLarge):
		return "toolarge"
	case errors.Is(err, qrun.ErrTimeout):
		return "timeout"
	case errors.Is(err, qrun.ErrConnect):
		return "connect"
	case errors.Is(err, qrun.ErrLimit):
		return "limit"
	}
	return "error"
}

// main is not run: the module is a WASI reactor.
func main() {}
