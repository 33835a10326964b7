package raftq

import (
	"container/heap"
	"errors"
	"time"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// minLease is the shortest lease the worker plans extensions around.
const minLease = 300 * time.Millisecond

// ledger is what a worker stream owes the node, apart from any I/O: the
// jobs held (running, or pushed and waiting for a free slot), their next
// lease extension, the acks and nacks not sent yet, and the credit to ask
// for. Owned by the worker's loop goroutine.
type ledger struct {
	concurrency, prefetch int
	held                  map[string]*held
	waiting               []*Job
	active                int
	acks                  []*pb.LeaseToken
	nacks                 []*pb.NackItem
	// extensions orders the held jobs by their next extension, so a
	// worker holding thousands of jobs finds the due ones without a scan.
	extensions extensionHeap
	// outstanding is credit granted on this stream not yet used by a push.
	outstanding int
	stopping    bool
}

type held struct {
	token      *pb.LeaseToken
	every      time.Duration
	nextExtend time.Time
	// index is the job's place in the extension heap.
	index int
}

// extensionHeap is a min-heap of held jobs by their next extension.
type extensionHeap []*held

func (h extensionHeap) Len() int           { return len(h) }
func (h extensionHeap) Less(i, j int) bool { return h[i].nextExtend.Before(h[j].nextExtend) }
func (h extensionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *extensionHeap) Push(x any) {
	entry := x.(*held)
	entry.index = len(*h)
	*h = append(*h, entry)
}
func (h *extensionHeap) Pop() any {
	old := *h
	last := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return last
}

func newLedger(concurrency, prefetch int) *ledger {
	return &ledger{concurrency: max(concurrency, 1), prefetch: max(prefetch, 0), held: map[string]*held{}}
}

// release forgets a held job.
func (l *ledger) release(jobID string) (*held, bool) {
	h, ok := l.held[jobID]
	if ok {
		delete(l.held, jobID)
		heap.Remove(&l.extensions, h.index)
	}
	return h, ok
}

// receive records a job the node pushed; it waits for a free slot.
func (l *ledger) receive(leased *pb.LeasedJob, now time.Time) {
	l.outstanding = max(0, l.outstanding-1)
	if l.stopping {
		// Never started, so never reported: closing the stream cleanly
		// hands it back to the queue at once.
		return
	}
	job := jobFromLeased(leased)
	lease := max(job.LeaseExpiresAt.Sub(now), minLease)
	h := &held{token: job.Token, every: lease / 3, nextExtend: now.Add(lease / 3)}
	l.release(job.ID) // a job pushed again carries a newer lease
	l.held[job.ID] = h
	heap.Push(&l.extensions, h)
	l.waiting = append(l.waiting, job)
}

// nextToStart is a waiting job when a slot is free; it runs from now.
func (l *ledger) nextToStart() *Job {
	if l.active >= l.concurrency || len(l.waiting) == 0 {
		return nil
	}
	job := l.waiting[0]
	l.waiting = l.waiting[1:]
	l.active++
	return job
}

// finish records a handler's outcome: an ack, or a nack with its error.
func (l *ledger) finish(jobID string, err error) {
	l.active--
	h, ok := l.release(jobID)
	if !ok {
		return
	}
	if err == nil {
		l.acks = append(l.acks, h.token)
		return
	}
	l.nacks = append(l.nacks, nackFor(h.token, err))
}

func nackFor(token *pb.LeaseToken, err error) *pb.NackItem {
	item := &pb.NackItem{Token: token, Error: errorText(err.Error())}
	var jobErr *JobError
	if errors.As(err, &jobErr) {
		item.Dead = jobErr.Dead
		if jobErr.RetryAfter != nil {
			ms := max(jobErr.RetryAfter.Milliseconds(), 0)
			item.RetryDelayMs = &ms
		}
	}
	return item
}

// stop takes no more jobs: the waiting ones are let go unreported.
func (l *ledger) stop() {
	l.stopping = true
	for _, job := range l.waiting {
		l.release(job.ID)
	}
	l.waiting = nil
}

// nextExtend is when the next lease extension is due (zero: none held).
func (l *ledger) nextExtend() time.Time {
	if len(l.extensions) == 0 {
		return time.Time{}
	}
	return l.extensions[0].nextExtend
}

// outcomes is how many acks and nacks wait to be sent.
func (l *ledger) outcomes() int { return len(l.acks) + len(l.nacks) }

// done: stopping, nothing running and nothing left to report.
func (l *ledger) done() bool {
	return l.stopping && l.active == 0 && len(l.acks) == 0 && len(l.nacks) == 0
}

func (l *ledger) credit() uint32 {
	if l.stopping {
		return 0
	}
	want := l.concurrency + l.prefetch - len(l.held) - l.outstanding
	if want <= 0 {
		return 0
	}
	l.outstanding += want
	return uint32(want)
}

// takeFrame is the next frame: outcomes, due extensions and credit for
// free slots (all of it with open, on a new stream); nil when there is
// nothing to send.
func (l *ledger) takeFrame(open *pb.WorkerOpen, now time.Time) *pb.WorkerFrame {
	var extends []*pb.LeaseToken
	for len(l.extensions) > 0 && !l.extensions[0].nextExtend.After(now) {
		h := l.extensions[0]
		extends = append(extends, h.token)
		h.nextExtend = now.Add(h.every)
		heap.Fix(&l.extensions, 0)
	}
	if open != nil {
		l.outstanding = 0
	}
	credit := l.credit()
	if open == nil && len(l.acks) == 0 && len(l.nacks) == 0 && len(extends) == 0 && credit == 0 {
		return nil
	}
	frame := &pb.WorkerFrame{Open: open, Acks: l.acks, Nacks: l.nacks, Extends: extends, Credit: credit}
	l.acks, l.nacks = nil, nil
	return frame
}

// restore puts back the outcomes of a frame that never reached the node.
func (l *ledger) restore(frame *pb.WorkerFrame) {
	l.acks = append(frame.GetAcks(), l.acks...)
	l.nacks = append(frame.GetNacks(), l.nacks...)
}
