package admin_test

import (
	"context"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/qrun-dev/qrun/runtime/admin"
)

// storesBackend declares two stores.
type storesBackend struct{ fakeBackend }

func (*storesBackend) KVStores() []admin.KVStoreInfo {
	return []admin.KVStoreInfo{{Name: "counts", Engine: "d", MaxValueSize: 1 << 20}, {Name: "sessions", Engine: "p", MaxValueSize: 512}}
}

func TestKVStoresRoute(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		backend admin.Backend
		want    []admin.KVStoreInfo
	}{
		{"stores", &storesBackend{}, (&storesBackend{}).KVStores()},
		{"no stores", &fakeBackend{}, []admin.KVStoreInfo{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(admin.Handler(admin.Options{Token: "t", Backend: tc.backend}))
			defer ts.Close()
			got, err := (&admin.Client{BaseURL: ts.URL, Token: "t"}).KVStores(ctx)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("KVStores = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
