// Package ring is a bounded multi-producer multi-consumer queue of fixed-size
// slots in a POSIX shared-memory segment (a file under /dev/shm, mapped
// shared), usable at once by any number of goroutines and processes, with
// no lock that a dead process could hold.
//
// # Design
//
// It is Dmitry Vyukov's bounded MPMC queue laid out in shared memory: a
// producer claims a position by advancing the shared tail with a
// compare-and-swap, writes the slot, then publishes it by moving the slot's
// sequence word; a consumer claims by advancing the head the same way,
// copies the slot, then releases it for the next lap. No step holds anything
// another process waits on except for the few instructions between a claim
// and its publish or release, and for that window there is a recovery rule
// (below), so a process killed at any instant cannot wedge the others.
//
// Every transition of a slot is a compare-and-swap on its sequence word, so
// a consumer validates its copy seqlock-style: the release succeeds only if
// nobody took the slot away while it copied. That is what makes cyclic mode
// safe: a producer that overwrites the oldest message while a consumer is
// copying it makes that consumer's release fail, and the consumer discards
// its (possibly torn) copy instead of delivering it. The overwrite is
// counted once, by the producer whose swap succeeded.
//
// Waiting is a brief spin and then a futex (FUTEX_WAIT/FUTEX_WAKE without
// the private flag, so it works across processes) on a sequence word in the
// header: consumers sleep on the data word, blocked producers on the space
// word. A waker only makes the system call when the waiter count says
// someone sleeps, so a busy ring makes no system calls at all. Every sleep
// has a timeout, so a lost wake-up costs latency, never liveness.
//
// # Byte layout (version 1)
//
// All integers are little-endian; offsets are in bytes. The segment is a
// 4096-byte header followed by Capacity slots of SlotStride bytes each.
//
//	header
//	  0  [8]  magic "QRUNRING" (written last by the creator: until it reads
//	          correctly the segment is still being initialised)
//	  8  u32  layout version (1)
//	 12  u32  mode: 0 blocking, 1 cyclic
//	 16  u32  slot size: the largest record, in bytes
//	 20  u32  capacity: number of slots, a power of two
//	 24  u32  slot stride: 32 + slot size rounded up to a multiple of 64
//	 28  u32  header size (4096)
//	 32  u64  nonce: random, chosen at creation (IDs use it)
//	 40  i64  creation time, Unix nanoseconds
//	 64  u64  tail: the next position a producer claims
//	128  u64  head: the next position a consumer claims
//	192  u32  data futex word: incremented after every publish
//	196  u32  number of consumers sleeping on the data word
//	256  u32  space futex word: incremented after every release
//	260  u32  number of producers sleeping on the space word
//	320  u64  records published since creation
//	328  u64  records overwritten (cyclic mode)
//	336  u64  claimed writes skipped by the stall rule
//	344  u64  claimed reads abandoned by the stall rule
//
//	slot i, at 4096 + i*stride
//	  0  u64  sequence: 2*p while the slot is free for position p,
//	          2*p+1 once the record for position p is published
//	  8  u32  record length in bytes (at most the slot size)
//	 12  u32  flags (bit 0: the record is a qrun envelope; see package shm)
//	 16  i64  enqueue time, Unix nanoseconds (0: unknown)
//	 24  i64  not visible before, Unix nanoseconds (0: at once)
//	 32  ...  record bytes
//
// Positions start at 0 and only grow; position p lives in slot p mod
// Capacity. A fresh segment has every slot i free for position i.
//
// # Producing from another program
//
//  1. Load tail (p) and the sequence s of slot p mod Capacity.
//  2. If s == 2*p, compare-and-swap tail from p to p+1; if that fails, go to 1.
//     If s < 2*p the ring is full (wait, or overwrite in cyclic mode as
//     Push does); if s > 2*p another producer got there first: go to 1.
//  3. Write length, flags, times and record bytes.
//  4. Compare-and-swap the sequence from 2*p to 2*p+1. If it fails, the stall
//     rule skipped the slot: the record was not delivered; produce it again.
//  5. Atomically add the number published to the published counter (it
//     only feeds statistics), atomically increment the data futex word and,
//     if the sleeper count is not zero, FUTEX_WAKE it (not private), all.
//
// Consuming is the mirror image: the slot at head h is ready when its
// sequence is 2*h+1; claim by compare-and-swap of head from h to h+1, copy,
// then compare-and-swap the sequence from 2*h+1 to 2*(h+Capacity), and
// discard the copy if that fails. Increment the space word and wake sleepers.
//
// # Stall rule (recovery from dead processes)
//
// A process killed between claiming a position and publishing (or releasing)
// it leaves that slot half-done, and FIFO order would wedge everyone behind
// it. So when the slot at the head has been claimed but unpublished for
// longer than the stall timeout (one second by default; a live producer
// needs microseconds), a consumer skips it: it claims the head and moves the
// sequence straight to the next lap. Symmetrically, a blocking producer
// facing a slot whose read was claimed but not released for that long
// releases it itself. Each is counted in the header. A producer that was
// merely stopped (SIGSTOP, a debugger) that long finds its publish refused
// and produces the record again; only if it was stopped in the middle of
// copying its bytes can its late writes land in the slot's next record.
package ring
