// Package raftq is the Go SDK of raftq, a durable, Raft-replicated job queue.
//
//   - [Dial] connects to any node (it forwards each call to its shard's
//     leader), with TLS and a token as options.
//   - [Producer] enqueues jobs with every option, retried through
//     elections and restarts.
//   - [Worker] runs a handler over a queue's jobs on one stream: bounded
//     concurrency, leases extended while handlers run, nil acks, an error
//     nacks, and cancelling Run's context stops it gracefully, handing the
//     jobs it has not started back to the queue.
//
// Producers write the current OpenTelemetry span's traceparent into each
// job's headers; workers run each handler in a child span.
//
//	client, err := raftq.Dial("127.0.0.1:7400")
//	id, err := client.Producer().Enqueue(ctx, "emails", []byte("hello"), raftq.Priority(1))
//	err = raftq.NewWorker(client, "emails", func(ctx context.Context, job *raftq.Job) error {
//		return send(job.Payload)
//	}, raftq.Concurrency(8)).Run(ctx)
package raftq
