package memory

import "github.com/qrun-dev/qrun/engines/internal/pagesel"

// seqEntry is an entry of a queue's bySeq list (pagesel.Log): records are
// recycled, so an entry is live only while its record still carries the
// number it was listed under and is in the queue.
type seqEntry = pagesel.Entry[*record]

// live reports whether x's record is still the one it was listed for and
// still in the queue.
func live(x seqEntry) bool { return x.R.seq == x.Seq && x.R.state != stateFree }
