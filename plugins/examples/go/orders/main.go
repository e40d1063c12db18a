// Command orders is an example qrun handler: it validates JSON orders and
// forwards the valid ones.
//
// A body that is not an order ({"id":"o-1","sku":"ABC","qty":2}) can never
// become one, so it is dead-lettered at once rather than retried. An order
// with "fail": true simulates a transient failure and is nacked, so the
// runtime retries it with backoff and dead-letters it after max_attempts.
// A valid order is published to the queue named by config key forward_to
// (if set) with attribute validated_by=orders-go, then acked; a failed
// publish nacks, so the order is retried rather than lost.
package main

import (
	"encoding/json"
	"errors"

	qrun "github.com/qrun-dev/qrun/plugins/sdk/go"
)

// order is the accepted message shape. Qty is a pointer so that a missing
// quantity is reported as missing, not as zero.
type order struct {
	ID   string `json:"id"`
	SKU  string `json:"sku"`
	Qty  *int   `json:"qty"`
	Fail bool   `json:"fail"`
}

// forwardTo is read once per instance: config cannot change during an
// instance's life, and a host call per message would be wasted.
var forwardTo string

func init() {
	qrun.Init(func() error {
		forwardTo, _ = qrun.Config("forward_to")
		return nil
	})
	qrun.Handle(handle)
}

func handle(m *qrun.Message) qrun.Verdict {
	o, err := parse(m.Body)
	if err != nil {
		qrun.Errorf("dead-letter: invalid order: %v", err)
		return qrun.DeadLetter
	}
	if o.Fail {
		qrun.Warnf("order %s: simulated transient failure (attempt %d)", o.ID, m.Attempt())
		return qrun.Nack
	}
	if forwardTo != "" {
		// The original bytes are forwarded, not a re-encoding, so fields this
		// validator does not know about survive.
		err := qrun.Publish(forwardTo, m.Body, map[string]string{"validated_by": "orders-go"})
		if err != nil {
			qrun.Warnf("order %s: %v", o.ID, err)
			return qrun.Nack
		}
	}
	qrun.Debugf("order %s: %d x %s ok", o.ID, *o.Qty, o.SKU)
	return qrun.Ack
}

// parse returns an error for every order that no retry can fix.
func parse(body []byte) (*order, error) {
	var o order
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, err
	}
	switch {
	case o.ID == "":
		return nil, errors.New("missing id")
	case o.SKU == "":
		return nil, errors.New("missing sku")
	case o.Qty == nil:
		return nil, errors.New("missing qty")
	case *o.Qty <= 0:
		return nil, errors.New("qty must be positive")
	}
	return &o, nil
}

// main is not run: the module is a WASI reactor and the SDK's exports are its
// entry points. It must exist because this is a main package.
func main() {}
