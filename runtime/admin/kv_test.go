package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/qrun-dev/qrun/engines"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/runtime/admin"
)

// kvBackend serves one memory store, "s".
type kvBackend struct {
	fakeBackend
	kv engines.KV
}

func (b *kvBackend) KV(_ context.Context, name string) (engines.KV, error) {
	if name != "s" {
		return nil, fmt.Errorf("%w: %q", admin.ErrUnknownKV, name)
	}
	return b.kv, nil
}

func TestKVRoutes(t *testing.T) {
	ctx := context.Background()
	eng := memory.New(memory.Options{})
	t.Cleanup(func() { _ = eng.Close() })
	kv, err := eng.OpenKV(ctx, engines.KVSpec{Name: "s", MaxValueSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(admin.Handler(admin.Options{Token: "t", Backend: &kvBackend{kv: kv}}))
	t.Cleanup(ts.Close)
	c := &admin.Client{BaseURL: ts.URL, Token: "t"}
	status := func(err error) int {
		var se *admin.StatusError
		if errors.As(err, &se) {
			return se.Status
		}
		return 0
	}

	e, err := c.KVPut(ctx, "s", "a/b c", admin.KVPutRequest{Value: "hello"})
	if err != nil || e.Version == 0 || e.Value != "hello" {
		t.Fatalf("put: %+v %v", e, err)
	}
	if _, err := c.KVPut(ctx, "s", "bin", admin.KVPutRequest{ValueBase64: "AP8="}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVPut(ctx, "s", "ttl", admin.KVPutRequest{Value: "x", TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.KVGet(ctx, "s", "a/b c"); err != nil || got.Value != "hello" || got.Version != e.Version {
		t.Errorf("get: %+v %v", got, err)
	}
	if got, err := c.KVGet(ctx, "s", "bin"); err != nil || got.ValueBase64 != "AP8=" || got.Value != "" {
		t.Errorf("binary value: %+v %v", got, err)
	}
	if got, err := c.KVGet(ctx, "s", "ttl"); err != nil || got.ExpiresAt == nil {
		t.Errorf("ttl: %+v %v", got, err)
	}
	if _, err := c.KVGet(ctx, "s", "nope"); status(err) != 404 {
		t.Errorf("absent key: %v, want 404", err)
	}
	if _, err := c.KVGet(ctx, "other", "a"); status(err) != 404 {
		t.Errorf("unknown store: %v, want 404", err)
	}
	if _, err := c.KVPut(ctx, "s", "k", admin.KVPutRequest{Value: "seventeen bytes!!"}); status(err) != 413 {
		t.Errorf("value beyond max_value_size: %v, want 413", err)
	}
	if _, err := c.KVPut(ctx, "s", "k", admin.KVPutRequest{Value: "x", TTL: "soon"}); status(err) != 400 {
		t.Errorf("bad ttl: %v, want 400", err)
	}
	page, err := c.KVList(ctx, "s", "", "", 2)
	if err != nil || len(page.Entries) != 2 || page.Entries[0].Key != "a/b c" || page.Next != "bin" {
		t.Fatalf("page 1: %+v %v", page, err)
	}
	page, err = c.KVList(ctx, "s", "", page.Next, 2)
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Key != "ttl" || page.Next != "" {
		t.Fatalf("page 2: %+v %v", page, err)
	}
	if page, err := c.KVList(ctx, "s", "b", "", 0); err != nil || len(page.Entries) != 1 || page.Entries[0].Key != "bin" {
		t.Errorf("prefix: %+v %v", page, err)
	}
	if err := c.KVDelete(ctx, "s", "a/b c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVGet(ctx, "s", "a/b c"); status(err) != 404 {
		t.Errorf("deleted key: %v, want 404", err)
	}
	// A backend without stores answers 501.
	plain := httptest.NewServer(admin.Handler(admin.Options{Backend: &fakeBackend{}}))
	t.Cleanup(plain.Close)
	if _, err := (&admin.Client{BaseURL: plain.URL}).KVGet(ctx, "s", "a"); status(err) != 501 {
		t.Errorf("no stores: %v, want 501", err)
	}
}
