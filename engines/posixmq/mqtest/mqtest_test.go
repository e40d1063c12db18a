//go:build linux

package mqtest_test

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qrun-dev/qrun/engines/posixmq/mq"
	"github.com/qrun-dev/qrun/engines/posixmq/mqtest"
)

// TestClientRoundTrip checks the C client against the kernel alone, so that
// an interop failure elsewhere points at qrun, not at the test tool.
func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	client := mqtest.Client(t)
	name := mqtest.UniqueName("qrt_client")
	q, err := mq.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600, &mq.Attr{MaxMsg: 10, MsgSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Close(); _ = mq.Unlink(name) }()
	sent := []mqtest.Msg{{0, []byte("low")}, {7, []byte{0, 1, 0xf1, 0xff}}, {7, nil}, {300, []byte("high")}}
	mqtest.Send(t, client, name, sent...)
	got := mqtest.Recv(t, client, name, len(sent))
	want := []mqtest.Msg{sent[3], sent[1], sent[2], sent[0]}
	if len(got) != len(want) {
		t.Fatalf("received %v, want %v", got, want)
	}
	for i := range want {
		if got[i].Prio != want[i].Prio || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Fatalf("received %v, want %v", got, want)
		}
	}
}
