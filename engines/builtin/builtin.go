// Package builtin lists the engine types compiled into qrun. It is the one
// place that names them: adding an engine is its package plus one line in
// Types. The runtime is handed this list (or any other); nothing registers
// itself.
package builtin

import (
	"github.com/qrun-dev/qrun/engines/disk"
	"github.com/qrun-dev/qrun/engines/enginetype"
	"github.com/qrun-dev/qrun/engines/memory"
	"github.com/qrun-dev/qrun/engines/nats"
	"github.com/qrun-dev/qrun/engines/posixmq"
	"github.com/qrun-dev/qrun/engines/postgres"
	"github.com/qrun-dev/qrun/engines/redis"
	"github.com/qrun-dev/qrun/engines/shm"
)

// Types returns every engine type built into qrun, on every platform: a
// type that works on some platforms only says so (enginetype.Type.Platforms),
// so a config naming it elsewhere is refused at validate with that reason
// rather than as an unknown type.
func Types() []enginetype.Type {
	return []enginetype.Type{
		memory.Type(),
		disk.Type(),
		postgres.Type(),
		posixmq.Type(),
		shm.Type(),
		redis.Type(),
		nats.Type(),
	}
}
