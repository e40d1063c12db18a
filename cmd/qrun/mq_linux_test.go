package main_test

import "github.com/qrun-dev/qrun/engines/posixmq/mq"

// unlinkMQ removes a POSIX message queue a test made.
func unlinkMQ(name string) { _ = mq.Unlink(name) }
