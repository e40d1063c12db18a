// Command __NAME__ is a qrun message handler written with the Go SDK.
//
// It greets each message in the log and, when config "forward_to" names a
// queue, publishes the body there with attribute greeted_by=__NAME__. An
// empty body is dead-lettered: no retry can give it content.
package main

import qrun "github.com/qrun-dev/qrun/plugins/sdk/go"

// forwardTo is read once per instance: config does not change during an
// instance's life.
var forwardTo string

func init() {
	qrun.Init(func() error {
		forwardTo, _ = qrun.Config("forward_to")
		return nil
	})
	qrun.Handle(handle)
}

func handle(m *qrun.Message) qrun.Verdict {
	if len(m.Body) == 0 {
		qrun.Log(qrun.LevelWarn, "empty body: nothing to greet")
		return qrun.DeadLetter
	}
	qrun.Infof("hello, %s", m.Body)
	if forwardTo != "" {
		err := qrun.Publish(forwardTo, m.Body, map[string]string{"greeted_by": "__NAME__"})
		if err != nil {
			qrun.Warnf("forward: %v", err)
			return qrun.Nack // retried with backoff
		}
	}
	return qrun.Ack
}

// main is not run: the module is a WASI reactor whose init functions
// register the handler.
func main() {}
