package lease

import "context"

// Block is the blocking half of a Receive over an engine whose receivers
// wait on a channel: it calls take until it leases something or fails, and
// between empty takes waits on the channel take returned (made under the
// queue's lock, so no wake-up between the take and the wait is missed), on
// ctx and on done, the handle's close. closed returns the handle's ErrClosed
// error once it is closed, nil before. A take that returns no channel and
// nothing leased is simply retried (its deliveries vanished meanwhile).
func Block(ctx context.Context, done <-chan struct{}, closed func() error, take func() (int, <-chan struct{}, error)) (int, error) {
	for {
		if err := closed(); err != nil {
			return 0, err
		}
		n, wait, err := take()
		if err != nil || n > 0 {
			return n, err
		}
		if wait == nil {
			continue
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-done:
			return 0, closed()
		}
	}
}
