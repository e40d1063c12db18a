package plugin

import (
	"testing"

	"github.com/qrun-dev/qrun/engines"
)

func TestInheritTrace(t *testing.T) {
	t.Parallel()
	const tp, own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-11111111111111111111111111111111-2222222222222222-01"
	traced := &engines.Delivery{Message: engines.Message{Attributes: map[string]string{AttrTraceParent: tp, AttrTraceState: "k=v"}}}
	tests := []struct {
		name string
		from *engines.Delivery
		in   map[string]string
		want map[string]string
	}{
		{"inherited onto no attributes", traced, nil, map[string]string{AttrTraceParent: tp, AttrTraceState: "k=v"}},
		{"inherited beside others", traced, map[string]string{"a": "b"}, map[string]string{"a": "b", AttrTraceParent: tp, AttrTraceState: "k=v"}},
		{"the guest's own wins", traced, map[string]string{AttrTraceParent: own}, map[string]string{AttrTraceParent: own}},
		{"nothing to inherit", &engines.Delivery{}, nil, nil},
	}
	for _, tt := range tests {
		msg := engines.Message{Attributes: tt.in}
		inheritTrace(&msg, tt.from)
		if len(msg.Attributes) != len(tt.want) {
			t.Fatalf("%s: %v, want %v", tt.name, msg.Attributes, tt.want)
		}
		for k, v := range tt.want {
			if msg.Attributes[k] != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, msg.Attributes[k], v)
			}
		}
	}
}
