//go:build linux

package posixmq

import (
	"fmt"
	"strings"

	"github.com/qrun-dev/qrun/engines/posixmq/mq"
)

// checkSizes refuses what the machine will refuse before any queue is
// opened, naming the limit (a *mq.LimitError, which matches ErrInvalid).
func checkSizes(o Options) *OptionError {
	if o.MaxMessages > 0 {
		if err := mq.CheckAttr("", o.MaxMessages, 1); err != nil {
			return &OptionError{Option: "max_messages", Reason: strings.TrimPrefix(err.Error(), "mq: "), Err: err}
		}
	}
	if o.MessageSize > 0 {
		if err := mq.CheckAttr("", 1, o.MessageSize); err != nil {
			return &OptionError{Option: "message_size", Reason: strings.TrimPrefix(err.Error(), "mq: "), Err: err}
		}
		if o.Format == Framed && o.MessageSize <= Overhead {
			return &OptionError{Option: "message_size", Reason: fmt.Sprintf("%d leaves no room for a body after the %d-byte envelope of format \"framed\"", o.MessageSize, Overhead)}
		}
	}
	return nil
}
