package raftq

import (
	"context"
	"time"
)

// RetryPolicy says how calls that may succeed later (elections, restarts,
// backpressure) are retried: exponential backoff until Deadline has
// passed. A zero Deadline tries once.
type RetryPolicy struct {
	Deadline       time.Duration
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

// DefaultRetry retries for 30 s, backing off from 50 ms to 1 s.
var DefaultRetry = RetryPolicy{Deadline: 30 * time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}

// NoRetry tries once.
var NoRetry = RetryPolicy{}

func retryCall[T any](ctx context.Context, policy RetryPolicy, call func(context.Context) (T, error)) (T, error) {
	started := time.Now()
	backoff := policy.InitialBackoff
	for {
		value, err := call(ctx)
		if err == nil {
			return value, nil
		}
		e := asError(err).(*Error)
		if !e.Retryable() || time.Since(started)+backoff > policy.Deadline || ctx.Err() != nil {
			return value, e
		}
		select {
		case <-ctx.Done():
			return value, asError(ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, policy.MaxBackoff)
	}
}
