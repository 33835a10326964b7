package raftq

import (
	"slices"
	"testing"
	"time"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

func leasedFor(id string, now time.Time, lease time.Duration) *pb.LeasedJob {
	return &pb.LeasedJob{
		Job:              &pb.Job{Id: id, Queue: "q"},
		Token:            &pb.LeaseToken{JobId: id, Attempt: 1},
		LeaseExpiresAtMs: now.Add(lease).UnixMilli(),
	}
}

func extendedIDs(frame *pb.WorkerFrame) []string {
	var ids []string
	for _, token := range frame.GetExtends() {
		ids = append(ids, token.GetJobId())
	}
	slices.Sort(ids)
	return ids
}

// Extensions come due in lease order, each every third of its own lease,
// and a finished job is never extended again.
func TestLedgerExtendsEachHeldJobEveryThirdOfItsLease(t *testing.T) {
	now := time.Now()
	l := newLedger(10, 0)
	l.receive(leasedFor("short", now, 3*time.Second), now)
	l.receive(leasedFor("long", now, 30*time.Second), now)
	l.receive(leasedFor("done", now, 3*time.Second), now)
	for l.nextToStart() != nil {
	}
	l.finish("done", nil)
	if got := l.nextExtend(); got.Sub(now) < 900*time.Millisecond || got.Sub(now) > time.Second {
		t.Fatalf("next extension %v after receipt, want about 1s", got.Sub(now))
	}
	if frame := l.takeFrame(nil, now.Add(500*time.Millisecond)); len(frame.GetExtends()) != 0 {
		t.Fatalf("extended %v before any was due", extendedIDs(frame))
	}
	if got := extendedIDs(l.takeFrame(nil, now.Add(1100*time.Millisecond))); !slices.Equal(got, []string{"short"}) {
		t.Fatalf("at 1.1s extended %v, want [short]", got)
	}
	if got := extendedIDs(l.takeFrame(nil, now.Add(10100*time.Millisecond))); !slices.Equal(got, []string{"long", "short"}) {
		t.Fatalf("at 10.1s extended %v, want [long short]", got)
	}
	l.finish("short", nil)
	l.finish("long", nil)
	if !l.nextExtend().IsZero() || len(l.extensions) != 0 {
		t.Fatalf("%d extensions planned with nothing held", len(l.extensions))
	}
}
