package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/runtime/admin"
	"github.com/qrun-dev/qrun/runtime/config"
	"github.com/qrun-dev/qrun/runtime/server"
)

// qrun kv reads and writes a config's key-value stores, as an operator
// would fix a counter or inspect what handlers remember. Like qrun send, a
// store whose engine other processes share (postgres) is opened directly
// as a producer, so no running qrun is needed; any other store (memory,
// disk) lives inside the running qrun and is reached through its admin
// API (/v1/kv). Writes made here are immediate: they belong to no
// delivery, and a delivery that read the key before commits only if it
// did not change meanwhile (docs/state.md).

const kvHelp = `Reads and writes the key-value stores a config declares (kv blocks).
A store of a postgres engine is opened directly, like qrun send does, so qrun
need not run; a memory or disk store is reached through the running qrun's
admin API. Keys and values are bytes; a value that is not UTF-8 is printed in
base64 (get --json and list show which).`

// kvStore is one store as qrun kv reaches it: directly or through the API.
type kvStore interface {
	get(ctx context.Context, key string) (admin.KVEntry, error)
	set(ctx context.Context, key string, value []byte, ttl time.Duration) (admin.KVEntry, error)
	del(ctx context.Context, key string) error
	list(ctx context.Context, prefix, after string, limit int) (admin.KVListResponse, error)
}

func cmdKV(op string, fs *pflag.FlagSet, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var ttl *time.Duration
	var prefix, after *string
	var limit *int
	want := 2
	switch op {
	case "set":
		ttl = fs.Duration("ttl", 0, "the key expires after this `duration` (0: never)")
		want = 3
	case "list":
		prefix = fs.String("prefix", "", "only keys beginning with `PREFIX`")
		after = fs.String("after", "", "only keys after `KEY` (the next page)")
		limit = fs.Int("limit", admin.DefaultKVListLimit, "at most `N` keys")
		want = 1
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if op == "list" && len(pos) == 2 && *prefix == "" {
		*prefix, pos = pos[1], pos[:1] // list STORE PREFIX
	}
	if len(pos) != want {
		return usagef("want %d arguments, got %d", want, len(pos))
	}
	if op == "list" && (*limit < 1 || *limit > admin.MaxKVListLimit) {
		return usagef("limit %d: want 1-%d", *limit, admin.MaxKVListLimit)
	}
	var value []byte
	if op == "set" {
		if value, err = readBody(pos[2], stdin); err != nil {
			return usageError{err}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
	defer cancel()
	st, closeStore, err := openKVStore(ctx, af, pos[0], stderr)
	if err != nil {
		return err
	}
	defer closeStore()

	switch op {
	case "get":
		e, err := st.get(ctx, pos[1])
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONTo(stdout, e)
		}
		v := []byte(e.Value)
		if e.ValueBase64 != "" {
			v, _ = base64.StdEncoding.DecodeString(e.ValueBase64)
		}
		_, err = stdout.Write(append(v, '\n'))
		return err
	case "set":
		e, err := st.set(ctx, pos[1], value, *ttl)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSONTo(stdout, e)
		}
		fmt.Fprintf(stdout, "version %d\n", e.Version)
		return nil
	case "del":
		return st.del(ctx, pos[1])
	}
	page, err := st.list(ctx, *prefix, *after, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSONTo(stdout, page)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVERSION\tVALUE")
	for _, e := range page.Entries {
		v := e.Value
		if e.ValueBase64 != "" {
			v = "base64:" + e.ValueBase64
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", e.Key, e.Version, v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(stdout, "more: --after %q\n", page.Next)
	}
	return nil
}

// openKVStore reaches the named store: directly when -c names a config
// whose store is on a shared engine, else through the admin API.
func openKVStore(ctx context.Context, af *adminFlags, store string, stderr io.Writer) (kvStore, func(), error) {
	if af.path != "" && af.addr == "" {
		cfg, diags := config.Load(af.path, config.Options{Engines: server.Builtin()})
		if err := writeDiagnostics(stderr, cfg, diags); err != nil {
			return nil, nil, err
		}
		shared, err := server.Builtin().SharedKV(cfg, store)
		if err != nil {
			return nil, nil, usageError{err}
		}
		if shared {
			kv, closeKV, err := server.OpenKVDirect(ctx, cfg, nil, store, nil)
			if err != nil {
				return nil, nil, err
			}
			return directKV{kv}, func() { _ = closeKV() }, nil
		}
	}
	c, err := af.client(stderr)
	if err != nil {
		return nil, nil, err
	}
	return apiKV{c: c, store: store}, func() {}, nil
}

// apiKV reaches a store through a running qrun's admin API.
type apiKV struct {
	c     *admin.Client
	store string
}

func (a apiKV) get(ctx context.Context, key string) (admin.KVEntry, error) {
	e, err := a.c.KVGet(ctx, a.store, key)
	return e, apiError(a.c, err)
}

func (a apiKV) set(ctx context.Context, key string, value []byte, ttl time.Duration) (admin.KVEntry, error) {
	req := admin.KVPutRequest{}
	if utf8.Valid(value) {
		req.Value = string(value)
	} else {
		req.ValueBase64 = base64.StdEncoding.EncodeToString(value)
	}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	e, err := a.c.KVPut(ctx, a.store, key, req)
	return e, apiError(a.c, err)
}

func (a apiKV) del(ctx context.Context, key string) error {
	return apiError(a.c, a.c.KVDelete(ctx, a.store, key))
}

func (a apiKV) list(ctx context.Context, prefix, after string, limit int) (admin.KVListResponse, error) {
	p, err := a.c.KVList(ctx, a.store, prefix, after, limit)
	return p, apiError(a.c, err)
}

// directKV is a store this process opened itself.
type directKV struct{ kv engines.KV }

func (d directKV) get(ctx context.Context, key string) (admin.KVEntry, error) {
	e, err := d.kv.Get(ctx, []byte(key))
	if errors.Is(err, engines.ErrNotFound) {
		return admin.KVEntry{}, fmt.Errorf("key %q: %w", key, err)
	}
	return admin.KVEntryOf(e), err
}

func (d directKV) set(ctx context.Context, key string, value []byte, ttl time.Duration) (admin.KVEntry, error) {
	es, err := d.kv.Apply(ctx, engines.KVOp{Kind: engines.KVSet, Key: []byte(key), Value: value, TTL: ttl})
	if err != nil || len(es) != 1 {
		return admin.KVEntry{}, err
	}
	return admin.KVEntryOf(es[0]), nil
}

func (d directKV) del(ctx context.Context, key string) error {
	_, err := d.kv.Apply(ctx, engines.KVOp{Kind: engines.KVDelete, Key: []byte(key)})
	return err
}

func (d directKV) list(ctx context.Context, prefix, after string, limit int) (admin.KVListResponse, error) {
	var a []byte
	if after != "" {
		a = []byte(after)
	}
	es, err := d.kv.List(ctx, []byte(prefix), a, limit+1)
	if err != nil {
		return admin.KVListResponse{}, err
	}
	out := admin.KVListResponse{Entries: []admin.KVEntry{}}
	for i, e := range es {
		if i == limit {
			out.Next = string(es[i-1].Key)
			break
		}
		out.Entries = append(out.Entries, admin.KVEntryOf(e))
	}
	return out, nil
}
