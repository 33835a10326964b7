package raftq

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// Producer enqueues jobs, retrying through elections and restarts.
type Producer struct {
	client *Client
	retry  RetryPolicy
}

// ProducerOption configures a [Producer].
type ProducerOption func(*Producer)

// WithRetry sets how failed enqueues are retried ([DefaultRetry] unless
// set; [NoRetry] tries once).
func WithRetry(policy RetryPolicy) ProducerOption { return func(p *Producer) { p.retry = policy } }

// Enqueue enqueues one job and returns its id.
func (p *Producer) Enqueue(ctx context.Context, queue string, payload []byte, opts ...JobOption) (string, error) {
	ids, err := p.EnqueueMany(ctx, queue, []NewJob{{Payload: payload, Options: opts}})
	if err != nil {
		return "", err
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("the node answered %d ids for one job", len(ids))
	}
	return ids[0], nil
}

// EnqueueMany enqueues up to [MaxEnqueueBatch] jobs in one request, all or
// nothing, and returns their ids in order.
func (p *Producer) EnqueueMany(ctx context.Context, queue string, jobs []NewJob) ([]string, error) {
	if len(jobs) == 0 {
		return nil, errors.New("nothing to enqueue: pass at least one job")
	}
	if len(jobs) > MaxEnqueueBatch {
		return nil, fmt.Errorf("%d jobs in one request; the limit is %d", len(jobs), MaxEnqueueBatch)
	}
	req := &pb.EnqueueRequest{Queue: queue, Jobs: make([]*pb.NewJob, len(jobs))}
	for i, job := range jobs {
		proto := &pb.NewJob{Payload: job.Payload, Headers: map[string]string{}}
		for _, opt := range job.Options {
			opt(proto)
		}
		injectTrace(ctx, proto.Headers)
		req.Jobs[i] = proto
	}
	resp, err := retryCall(ctx, p.retry, func(ctx context.Context) (*pb.EnqueueResponse, error) {
		// Each try asks for the route again: a failed one may have taught
		// the client where the leader went.
		to := p.client.forQueue(queue)
		var trailer metadata.MD
		resp, err := to.queue.Enqueue(to.context(p.client, ctx), req, grpc.Trailer(&trailer))
		p.client.observe(ctx, to, err, trailer)
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	return resp.GetJobIds(), nil
}
