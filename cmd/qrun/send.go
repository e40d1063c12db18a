package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// attrFlag collects repeated -a key=value flags.
type attrFlag map[string]string

// String implements pflag.Value.
func (a attrFlag) String() string {
	if len(a) == 0 {
		return "" // no default shown in --help
	}
	return fmt.Sprint(map[string]string(a))
}

// Type implements pflag.Value.
func (a attrFlag) Type() string { return "key=value" }

// Set implements pflag.Value: it adds one key=value pair.
func (a attrFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("attribute %q: want key=value", s)
	}
	a[k] = v
	return nil
}

func cmdSend(fs *pflag.FlagSet, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	path := fs.StringP("config", "c", "", "config `FILE` of the running qrun (for its admin address and token)")
	queue := fs.StringP("queue", "q", "", "`QUEUE` to send to")
	attrs := attrFlag{}
	fs.VarP(attrs, "attr", "a", "attribute `key=value` (repeatable)")
	delay := fs.Duration("delay", 0, "deliver after this `duration`")
	priority := fs.Uint("priority", 0, "message `priority` 0-255, higher first")
	contentType := fs.String("content-type", "", "content `type` of the body")
	correlation := fs.String("correlation-id", "", "correlation `id`")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this `duration`")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *queue == "" {
		return usagef("missing -q QUEUE")
	}
	if *priority > 255 {
		return usagef("priority %d: want 0-255", *priority)
	}
	if fs.NArg() > 1 {
		return usagef("want one BODY argument, got %d (quote the body)", fs.NArg())
	}
	body, err := readBody(fs.Arg(0), stdin)
	if err != nil {
		return usageError{err}
	}
	// send needs the target queue only: the config is decoded and
	// validated, but the consumers' plugins are not checked, so a broken
	// plugin elsewhere does not stop a producer.
	if *path == "" {
		return usagef("missing -c FILE")
	}
	cfg, diags := config.Load(*path, config.Options{Engines: server.Builtin()})
	if err := writeDiagnostics(stderr, cfg, diags); err != nil {
		return err
	}
	// Queues of engines that other processes share (shm, postgres) are written
	// directly, so a producer needs neither the admin API nor a running qrun.
	if shared, err := server.Builtin().Shared(cfg, *queue); err != nil {
		return usageError{err}
	} else if shared {
		msg := engines.Message{
			Body: body, Attributes: attrs, Priority: uint8(*priority), ContentType: *contentType,
			CorrelationID: *correlation, Delay: *delay,
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		msgs := []engines.Message{msg}
		if err := server.SendDirect(ctx, cfg, nil, *queue, msgs, nil); err != nil {
			return err
		}
		fmt.Fprintln(stdout, msgs[0].ID)
		return nil
	}
	url, err := adminURL(cfg, *path, ", so qrun send cannot reach qrun")
	if err != nil {
		return err
	}
	c := &admin.Client{BaseURL: url, Token: cfg.Runtime.AdminToken}
	msg := admin.SendMessage{
		Attributes: attrs, Priority: uint8(*priority), ContentType: *contentType, CorrelationID: *correlation,
	}
	if *delay > 0 {
		msg.Delay = delay.String()
	}
	// JSON strings carry text only; binary bodies travel base64-encoded.
	if utf8.Valid(body) {
		msg.Body = string(body)
	} else {
		msg.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := c.Send(ctx, *queue, admin.SendRequest{SendMessage: msg})
	var se *admin.StatusError
	if err != nil && !errors.As(err, &se) {
		return fmt.Errorf("%w (is qrun running with %s?)", err, *path)
	}
	if err != nil {
		return err
	}
	for _, id := range resp.IDs {
		fmt.Fprintln(stdout, id)
	}
	return nil
}

// readBody takes BODY literally, "-" as standard input, "@path" as a file.
func readBody(arg string, stdin io.Reader) ([]byte, error) {
	switch {
	case arg == "-":
		return io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		return os.ReadFile(arg[1:])
	}
	return []byte(arg), nil
}
