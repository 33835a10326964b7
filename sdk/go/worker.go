package raftq

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// Handler processes one job. nil acks it; an error nacks it with the
// error's text (see [JobError] to choose a delay or the dead letters).
type Handler func(ctx context.Context, job *Job) error

// Worker runs a Handler over a queue's jobs, over one worker stream.
//
// Up to Concurrency handlers run at once. While a handler runs, its lease
// is extended every third of the lease. Acks, nacks, extensions and the
// request for more jobs travel together in one frame. A broken stream is
// reopened with backoff.
type Worker struct {
	client   *Client
	queue    string
	handler  Handler
	lease    time.Duration
	workerID string
	logger   *slog.Logger
	ledger   *ledger
	// finished is the loop's reused buffer of outcomes taken from the box.
	finished []outcome
}

// WorkerOption configures a [Worker].
type WorkerOption func(*Worker)

// Concurrency is how many handlers run at once (default 1).
func Concurrency(n int) WorkerOption { return func(w *Worker) { w.ledger.concurrency = max(n, 1) } }

// Prefetch keeps n jobs waiting beyond Concurrency, so a free slot never
// waits a round trip for its next job (default 0). Their leases are
// extended too.
func Prefetch(n int) WorkerOption { return func(w *Worker) { w.ledger.prefetch = max(n, 0) } }

// Lease is the lease asked for each job (default: the queue's).
func Lease(d time.Duration) WorkerOption { return func(w *Worker) { w.lease = d } }

// WorkerID is the name the worker reports (default host-pid).
func WorkerID(id string) WorkerOption { return func(w *Worker) { w.workerID = id } }

// Logger receives the worker's warnings (default slog.Default()).
func Logger(l *slog.Logger) WorkerOption { return func(w *Worker) { w.logger = l } }

// NewWorker makes a worker of queue's jobs.
func NewWorker(client *Client, queue string, handler Handler, opts ...WorkerOption) *Worker {
	host, _ := os.Hostname()
	w := &Worker{
		client:   client,
		queue:    queue,
		handler:  handler,
		workerID: fmt.Sprintf("%s-%d", host, os.Getpid()),
		logger:   slog.Default(),
		ledger:   newLedger(1, 0),
	}
	for _, opt := range opts {
		opt(w)
	}
	return w
}

const (
	// minFrameGap is the shortest time between two frames of a stream.
	minFrameGap = 2 * time.Millisecond
	// fullBatch outcomes go out at once.
	fullBatch = 1024
)

type outcome struct {
	jobID string
	err   error
}

// outcomeBox carries finished handlers' outcomes to the stream's loop in
// batches: a handler appends, and signals only when the box was empty, so
// the loop wakes once for everything that finished meanwhile.
type outcomeBox struct {
	mu      sync.Mutex
	pending []outcome
	ready   chan struct{}
}

func newOutcomeBox() *outcomeBox { return &outcomeBox{ready: make(chan struct{}, 1)} }

func (b *outcomeBox) put(o outcome) {
	b.mu.Lock()
	wake := len(b.pending) == 0
	b.pending = append(b.pending, o)
	b.mu.Unlock()
	if wake {
		select {
		case b.ready <- struct{}{}:
		default:
		}
	}
}

// take empties the box (after a signal on ready).
func (b *outcomeBox) take(into []outcome) []outcome {
	b.mu.Lock()
	into = append(into[:0], b.pending...)
	b.pending = b.pending[:0]
	b.mu.Unlock()
	return into
}

// Run works until ctx is cancelled, then stops gracefully: no new job is
// started, running handlers finish (their context is not cancelled) and
// report, and the stream is closed, which hands the jobs given but not
// started back to the queue at once. It returns nil after a graceful stop,
// or an [*Error] when the node refuses the stream for good (a bad queue
// name, a missing role). Run once per Worker.
func (w *Worker) Run(ctx context.Context) error {
	outcomes := newOutcomeBox()
	// A fixed set of handler goroutines: their stacks, grown once, stay
	// grown (a goroutine per job pays for growing one every time).
	toRun := make(chan *Job, w.ledger.concurrency)
	defer close(toRun)
	handlerCtx := context.WithoutCancel(ctx)
	for range w.ledger.concurrency {
		go w.runHandlers(handlerCtx, toRun, outcomes)
	}
	stopCh := ctx.Done()
	delay := 100 * time.Millisecond
	for {
		done, err := w.runStream(ctx, toRun, outcomes, &stopCh)
		if done {
			return nil
		}
		if err != nil {
			if e := asError(err).(*Error); !e.Retryable() {
				return e
			}
			w.logger.Warn("raftq: worker stream broke; reconnecting", "queue", w.queue, "error", err)
		} else {
			delay = 100 * time.Millisecond
		}
		// Wait before reconnecting, still collecting handler outcomes.
		timer := time.NewTimer(delay)
	wait:
		for {
			select {
			case <-outcomes.ready:
				w.finish(outcomes)
				w.startWaiting(toRun)
			case <-stopCh:
				stopCh = nil
				w.ledger.stop()
			case <-timer.C:
				break wait
			}
		}
		if w.ledger.done() {
			return nil
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// runStream runs one stream until it ends: done when the worker is done.
func (w *Worker) runStream(ctx context.Context, toRun chan<- *Job, outcomes *outcomeBox, stopCh *<-chan struct{}) (done bool, err error) {
	to := w.client.forQueue(w.queue)
	streamCtx, cancel := context.WithCancel(to.context(w.client, context.WithoutCancel(ctx)))
	defer cancel()
	stream, err := to.queue.WorkerStream(streamCtx)
	if err != nil {
		w.client.observe(ctx, to, err, nil)
		return false, err
	}
	// Whatever ends the stream, learn from it where the leader is now.
	defer func() {
		if err != nil {
			w.client.observe(ctx, to, err, stream.Trailer())
		}
	}()
	open := &pb.WorkerOpen{Queue: w.queue, WorkerId: w.workerID}
	if w.lease > 0 {
		ms := w.lease.Milliseconds()
		open.LeaseMs = &ms
	}
	// This goroutine is the stream's only reader: gRPC allows one Recv at
	// a time, and a second one after the stream ended can block for ever.
	frames := make(chan *pb.ServerFrame)
	recvErr := make(chan error, 1)
	go func() {
		for {
			frame, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- frame:
			case <-streamCtx.Done():
				return
			}
		}
	}()
	// sendFailed is the stream's real error after a failed Send: Send
	// reports only io.EOF when the node ended the stream, and the reader
	// receives why. Frames still arriving are dropped: their jobs go back
	// to the queue when their leases run out.
	sendFailed := func(err error) error {
		if err != io.EOF {
			return err
		}
		for {
			select {
			case <-frames:
			case err := <-recvErr:
				if err == io.EOF {
					return sendErrEOF
				}
				return err
			}
		}
	}
	if err := stream.Send(w.ledger.takeFrame(open, time.Now())); err != nil {
		return false, sendFailed(err)
	}
	closed := false
	extend := time.NewTimer(time.Hour)
	defer extend.Stop()
	flush := time.NewTimer(time.Hour)
	defer flush.Stop()
	var lastSend time.Time
	for {
		if w.ledger.done() && !closed {
			// Close our side; the node applies what we sent, hands back
			// what we never started, and ends the stream.
			closed = true
			if err := stream.CloseSend(); err != nil {
				return false, err
			}
		}
		if next := w.ledger.nextExtend(); !next.IsZero() {
			extend.Reset(time.Until(next))
		}
		select {
		case frame := <-frames:
			for _, result := range frame.GetResults() {
				if result.GetCode() != 0 {
					w.logger.Warn("raftq: job result", "job", result.GetToken().GetJobId(), "message", result.GetMessage())
				}
			}
			now := time.Now()
			for _, leased := range frame.GetJobs() {
				w.ledger.receive(leased, now)
			}
			w.startWaiting(toRun)
		case err := <-recvErr:
			if err == io.EOF {
				return w.ledger.done(), nil
			}
			return false, err
		case <-outcomes.ready:
			w.finish(outcomes)
			w.startWaiting(toRun)
		case <-extend.C:
		case <-flush.C:
		case <-*stopCh:
			*stopCh = nil
			w.ledger.stop()
		}
		if closed {
			continue
		}
		// Frames at most every minFrameGap unless a batch is full: the
		// node refuses a flood of tiny frames, and bigger ones cost it less.
		now := time.Now()
		if gap := now.Sub(lastSend); gap < minFrameGap && w.ledger.outcomes() < fullBatch {
			flush.Reset(minFrameGap - gap)
			continue
		}
		if frame := w.ledger.takeFrame(nil, now); frame != nil {
			lastSend = now
			if err := stream.Send(frame); err != nil {
				w.ledger.restore(frame)
				return false, sendFailed(err)
			}
		}
	}
}

// sendErrEOF: the node ended the stream cleanly while frames were still
// to be sent; the worker reconnects and sends them on the next stream.
var sendErrEOF = &Error{Code: codes.Unavailable, Message: "the node ended the worker stream"}

// finish records every outcome in the box.
func (w *Worker) finish(outcomes *outcomeBox) {
	w.finished = outcomes.take(w.finished)
	for _, o := range w.finished {
		w.ledger.finish(o.jobID, o.err)
	}
	clear(w.finished) // let the errors go
}

// startWaiting hands waiting jobs to free handlers; the ledger starts no
// more than Concurrency at once, so the send never blocks.
func (w *Worker) startWaiting(toRun chan<- *Job) {
	for job := w.ledger.nextToStart(); job != nil; job = w.ledger.nextToStart() {
		toRun <- job
	}
}

// runHandlers is one handler slot: it runs jobs until toRun is closed.
func (w *Worker) runHandlers(ctx context.Context, toRun <-chan *Job, outcomes *outcomeBox) {
	spanName := handlerSpanName(w.queue)
	for job := range toRun {
		spanCtx, span := handlerSpan(ctx, spanName, job)
		err := w.run(spanCtx, job)
		endSpan(span, err)
		outcomes.put(outcome{jobID: job.ID, err: err})
	}
}

// run calls the handler, turning a panic into the job's error.
func (w *Worker) run(ctx context.Context, job *Job) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return w.handler(ctx, job)
}
