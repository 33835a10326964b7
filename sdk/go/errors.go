package raftq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a call to a raftq node that failed. Message is the node's,
// which says what to change (a field, a role, an address).
type Error struct {
	Code    codes.Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Retryable reports whether the same call may succeed later (an election,
// a restart, backpressure).
func (e *Error) Retryable() bool {
	switch e.Code {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied,
		codes.Unauthenticated, codes.Unimplemented, codes.OutOfRange, codes.AlreadyExists, codes.Canceled:
		return false
	}
	return true
}

func asError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		s := status.FromContextError(err)
		return &Error{Code: s.Code(), Message: s.Message()}
	}
	s, _ := status.FromError(err)
	return &Error{Code: s.Code(), Message: s.Message()}
}

// JobError is what a handler returns to choose what happens to its job:
// [Dead] sends it to the dead letters now, [RetryAfter] retries it after a
// delay instead of its backoff. Any other error retries the job after its
// backoff; all record the error's text as the job's last error.
type JobError struct {
	Err        error
	Dead       bool
	RetryAfter *time.Duration
}

func (e *JobError) Error() string { return e.Err.Error() }
func (e *JobError) Unwrap() error { return e.Err }

// Dead wraps a handler's error so the job goes to the dead letters now.
func Dead(err error) error { return &JobError{Err: err, Dead: true} }

// RetryAfter wraps a handler's error so the job retries after delay.
func RetryAfter(delay time.Duration, err error) error {
	return &JobError{Err: err, RetryAfter: &delay}
}
