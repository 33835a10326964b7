package raftq

import (
	"time"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// Job is a leased job, as a handler (or [Client.Fetch]) gets it.
type Job struct {
	ID       string
	Queue    string
	Payload  []byte
	Headers  map[string]string
	Priority int32
	// Attempt is 1 on the first delivery, 2 on the first retry, ...
	Attempt     uint32
	MaxAttempts uint32
	// LastError is the error the previous attempt reported, if any.
	LastError string
	// LeaseExpiresAt is when the lease runs out unless extended (a Worker
	// extends it while the handler runs).
	LeaseExpiresAt time.Time
	// Token proves this delivery's lease; it is refused once the job is
	// delivered again.
	Token *pb.LeaseToken
}

func jobFromLeased(leased *pb.LeasedJob) *Job {
	j := leased.GetJob()
	headers := j.GetHeaders()
	if headers == nil {
		headers = map[string]string{}
	}
	return &Job{
		ID:             j.GetId(),
		Queue:          j.GetQueue(),
		Payload:        j.GetPayload(),
		Headers:        headers,
		Priority:       j.GetPriority(),
		Attempt:        j.GetAttempt(),
		MaxAttempts:    j.GetMaxAttempts(),
		LastError:      j.GetLastError(),
		LeaseExpiresAt: time.UnixMilli(leased.GetLeaseExpiresAtMs()),
		Token:          leased.GetToken(),
	}
}

// NewJob is a job to enqueue: a payload and its options.
type NewJob struct {
	Payload []byte
	Options []JobOption
}

// JobOption sets one option of a job.
type JobOption func(*pb.NewJob)

// Header sets one header.
func Header(key, value string) JobOption {
	return func(j *pb.NewJob) { j.Headers[key] = value }
}

// Headers sets several headers.
func Headers(headers map[string]string) JobOption {
	return func(j *pb.NewJob) {
		for k, v := range headers {
			j.Headers[k] = v
		}
	}
}

// Priority: higher runs first (default 0).
func Priority(p int32) JobOption { return func(j *pb.NewJob) { j.Priority = p } }

// Delay makes the job ready after d.
func Delay(d time.Duration) JobOption {
	return func(j *pb.NewJob) {
		ms := d.Milliseconds()
		j.DelayMs, j.RunAtMs = &ms, nil
	}
}

// RunAt makes the job ready at t (a past time means now).
func RunAt(t time.Time) JobOption {
	return func(j *pb.NewJob) {
		ms := t.UnixMilli()
		j.RunAtMs, j.DelayMs = &ms, nil
	}
}

// MaxAttempts caps deliveries before the job is dead-lettered (0: the
// queue's default).
func MaxAttempts(n uint32) JobOption { return func(j *pb.NewJob) { j.MaxAttempts = n } }

// Backoff sets the retry delay: initial * multiplier^(retry-1), at most max.
func Backoff(initial, max time.Duration, multiplier float64) JobOption {
	return func(j *pb.NewJob) {
		j.Backoff = &pb.Backoff{InitialMs: initial.Milliseconds(), MaxMs: max.Milliseconds(), Multiplier: multiplier}
	}
}

// IdempotencyKey: a repeat within the queue's dedup window returns the
// first job's id instead of adding a job.
func IdempotencyKey(key string) JobOption { return func(j *pb.NewJob) { j.IdempotencyKey = key } }
