package raftq_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"

	raftq "github.com/raftq/raftq/sdk/go"
	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

func oneNode(t *testing.T) *raftq.Client {
	t.Helper()
	n := spawnCluster(t, 1)[0]
	client, err := raftq.Dial(n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	n.waitServing(t, func(ctx context.Context) error { _, err := client.Stats(ctx, ""); return err })
	return client
}

func stats(t *testing.T, client *raftq.Client, queue string) *pb.QueueStats {
	t.Helper()
	all, err := client.Stats(context.Background(), queue)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range all {
		if q.GetQueue() == queue {
			return q
		}
	}
	return &pb.QueueStats{Queue: queue}
}

func code(err error) codes.Code {
	var e *raftq.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return codes.Unknown
}

// run starts w and returns a function that stops it and waits for Run.
func run(t *testing.T, w *raftq.Worker) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return after its context was cancelled")
		}
	}
}

func TestGeneratedCodeMatchesTheProtos(t *testing.T) {
	out, err := exec.Command("./generate.sh", "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestEveryJobOptionReachesTheNode(t *testing.T) {
	client := oneNode(t)
	ctx := context.Background()
	p := client.Producer()
	before := time.Now()
	id, err := p.Enqueue(ctx, "opts", []byte{0, 1, 2}, raftq.Header("tenant", "acme"), raftq.Priority(7),
		raftq.Delay(time.Minute), raftq.MaxAttempts(9), raftq.Backoff(500*time.Millisecond, 10*time.Second, 3),
		raftq.IdempotencyKey("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	job, err := client.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != pb.JobState_JOB_STATE_SCHEDULED || string(job.GetPayload()) != "\x00\x01\x02" ||
		job.GetHeaders()["tenant"] != "acme" || job.GetPriority() != 7 || job.GetMaxAttempts() != 9 ||
		job.GetIdempotencyKey() != "order-1" {
		t.Fatalf("stored job %v", job)
	}
	if due := time.UnixMilli(job.GetDueAtMs()); due.Before(before.Add(59*time.Second)) || due.After(time.Now().Add(61*time.Second)) {
		t.Fatalf("due at %v", due)
	}
	if again, _ := p.Enqueue(ctx, "opts", []byte("again"), raftq.IdempotencyKey("order-1")); again != id {
		t.Fatalf("the idempotency key gave %q, want %q", again, id)
	}
	at := time.Now().Add(2 * time.Hour)
	laterID, _ := p.Enqueue(ctx, "opts", []byte("later"), raftq.RunAt(at))
	later, _ := client.GetJob(ctx, laterID)
	if later.GetState() != pb.JobState_JOB_STATE_SCHEDULED || later.GetDueAtMs()-at.UnixMilli() > 1000 || at.UnixMilli()-later.GetDueAtMs() > 1000 {
		t.Fatalf("run_at job %v", later)
	}
	low, _ := p.Enqueue(ctx, "opts", []byte("low"), raftq.RunAt(time.Now().Add(-time.Minute)))
	high, _ := p.Enqueue(ctx, "opts", []byte("high"), raftq.Priority(5))
	jobs, err := client.Fetch(ctx, "opts", raftq.FetchOptions{MaxJobs: 2})
	if err != nil || len(jobs) != 2 || jobs[0].ID != high || jobs[1].ID != low || string(jobs[0].Payload) != "high" {
		t.Fatalf("fetched %v, %v; want high then low", jobs, err)
	}
}

func TestBadInputIsRefusedWithAReason(t *testing.T) {
	client := oneNode(t)
	ctx := context.Background()
	p := client.Producer()
	_, err := p.EnqueueMany(ctx, "bad", []raftq.NewJob{{Payload: []byte("ok")}, {Payload: []byte("late"), Options: []raftq.JobOption{raftq.Delay(400 * 24 * time.Hour)}}})
	var e *raftq.Error
	if !errors.As(err, &e) || e.Code != codes.InvalidArgument || e.Retryable() {
		t.Fatalf("got %v, want a final InvalidArgument", err)
	}
	if _, err := p.Enqueue(ctx, "no spaces!", []byte("x")); code(err) != codes.InvalidArgument {
		t.Fatalf("bad queue name: %v", err)
	}
	if s := stats(t, client, "bad"); s.GetEnqueuedTotal() != 0 {
		t.Fatalf("stored %d jobs of a refused request", s.GetEnqueuedTotal())
	}
	if _, err := raftq.Dial("ftp://127.0.0.1:1"); err == nil {
		t.Fatal("an ftp:// address was accepted")
	}
	down, _ := raftq.Dial("127.0.0.1:1")
	defer down.Close()
	_, err = down.Producer(raftq.WithRetry(raftq.NoRetry)).Enqueue(ctx, "q", []byte("x"))
	if !errors.As(err, &e) || !e.Retryable() {
		t.Fatalf("a node that is down: %v, want a retryable error", err)
	}
}

func TestAStaleLeaseTokenIsRefused(t *testing.T) {
	client := oneNode(t)
	ctx := context.Background()
	id, _ := client.Producer().Enqueue(ctx, "fenced", []byte("x"))
	first, err := client.Fetch(ctx, "fenced", raftq.FetchOptions{Lease: 300 * time.Millisecond})
	if err != nil || len(first) != 1 {
		t.Fatalf("fetch: %v %v", first, err)
	}
	var second []*raftq.Job
	waitFor(t, "the redelivery", 30*time.Second, func() bool {
		second, _ = client.Fetch(ctx, "fenced", raftq.FetchOptions{Lease: 30 * time.Second})
		return len(second) == 1
	})
	if second[0].ID != id || second[0].Attempt != first[0].Attempt+1 {
		t.Fatalf("redelivered %+v", second[0])
	}
	if err := client.Ack(ctx, first[0]); code(err) != codes.FailedPrecondition {
		t.Fatalf("a stale ack: %v, want FailedPrecondition", err)
	}
	if until, err := client.Extend(ctx, second[0], time.Minute); err != nil || time.Until(until) < 50*time.Second {
		t.Fatalf("extend: %v %v", until, err)
	}
	if err := client.Ack(ctx, second[0]); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, client, "fenced"); s.GetAckedTotal() != 1 || s.GetLeased() != 0 {
		t.Fatalf("stats %v", s)
	}
}

func enqueueN(t *testing.T, client *raftq.Client, queue, prefix string, n int) []string {
	t.Helper()
	jobs := make([]raftq.NewJob, n)
	for i := range jobs {
		jobs[i] = raftq.NewJob{Payload: fmt.Appendf(nil, "%s%d", prefix, i)}
	}
	ids, err := client.Producer().EnqueueMany(context.Background(), queue, jobs)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestAWorkerAcksEveryJobOnce(t *testing.T) {
	client := oneNode(t)
	ids := enqueueN(t, client, "plain", "", 300)
	var mu sync.Mutex
	seen := map[string]int{}
	stop := run(t, raftq.NewWorker(client, "plain", func(_ context.Context, job *raftq.Job) error {
		mu.Lock()
		defer mu.Unlock()
		seen[job.ID]++
		return nil
	}, raftq.Concurrency(8), raftq.Prefetch(8)))
	waitFor(t, "every job acked", 30*time.Second, func() bool { return stats(t, client, "plain").GetAckedTotal() == 300 })
	stop()
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("job %s handled %d times", id, seen[id])
		}
	}
}

func TestASlowHandlerKeepsItsLease(t *testing.T) {
	client := oneNode(t)
	ctx := context.Background()
	client.Producer().Enqueue(ctx, "slow", []byte("x"))
	attempts := make(chan uint32, 4)
	stop := run(t, raftq.NewWorker(client, "slow", func(_ context.Context, job *raftq.Job) error {
		attempts <- job.Attempt
		time.Sleep(2 * time.Second) // the work itself: five leases long
		return nil
	}, raftq.Lease(400*time.Millisecond)))
	if a := <-attempts; a != 1 {
		t.Fatalf("attempt %d", a)
	}
	if jobs, _ := client.Fetch(ctx, "slow", raftq.FetchOptions{Wait: time.Second}); len(jobs) != 0 {
		t.Fatal("another worker leased a job whose handler is running")
	}
	waitFor(t, "the ack", 30*time.Second, func() bool { return stats(t, client, "slow").GetAckedTotal() == 1 })
	stop()
	if len(attempts) != 0 || stats(t, client, "slow").GetExpiredTotal() != 0 {
		t.Fatal("the lease ran out while the handler ran")
	}
}

func TestFailuresRetryWithBackoffThenDeadLetter(t *testing.T) {
	client := oneNode(t)
	ctx := context.Background()
	p := client.Producer()
	flaky, _ := p.Enqueue(ctx, "failing", []byte("x"), raftq.MaxAttempts(3), raftq.Backoff(50*time.Millisecond, 100*time.Millisecond, 2))
	poison, _ := p.Enqueue(ctx, "failing", []byte("poison"), raftq.MaxAttempts(5))
	var mu sync.Mutex
	attempts := map[string]int{}
	stop := run(t, raftq.NewWorker(client, "failing", func(_ context.Context, job *raftq.Job) error {
		mu.Lock()
		attempts[job.ID]++
		mu.Unlock()
		if string(job.Payload) == "poison" {
			return raftq.Dead(errors.New("cannot parse"))
		}
		return fmt.Errorf("boom on attempt %d", job.Attempt)
	}, raftq.Concurrency(2)))
	waitFor(t, "both dead", 30*time.Second, func() bool { return stats(t, client, "failing").GetDead() == 2 })
	stop()
	if attempts[flaky] != 3 || attempts[poison] != 1 {
		t.Fatalf("attempts %v", attempts)
	}
	dead, err := client.Admin().ListDead(client.Context(ctx), &pb.ListDeadRequest{Queue: "failing"})
	if err != nil {
		t.Fatal(err)
	}
	errs := map[string]string{}
	for _, j := range dead.GetJobs() {
		errs[j.GetId()] = j.GetLastError()
	}
	if errs[flaky] != "boom on attempt 3" || errs[poison] != "cannot parse" {
		t.Fatalf("dead letters %v", errs)
	}
}

func TestStopReleasesTheJobsThatHaveNotStarted(t *testing.T) {
	client := oneNode(t)
	enqueueN(t, client, "release", "", 10)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	stop := run(t, raftq.NewWorker(client, "release", func(context.Context, *raftq.Job) error {
		started <- struct{}{}
		<-release
		return nil
	}, raftq.Concurrency(1), raftq.Prefetch(5), raftq.Lease(time.Minute)))
	<-started
	waitFor(t, "six leased", 30*time.Second, func() bool { return stats(t, client, "release").GetLeased() == 6 })
	go func() { time.Sleep(200 * time.Millisecond); close(release) }()
	stop()
	s := stats(t, client, "release")
	if s.GetAckedTotal() != 1 || s.GetLeased() != 0 || s.GetReady() != 9 {
		t.Fatalf("after stop: %v; want 1 acked and 9 ready at once", s)
	}
}

func TestTheHandlerSpanIsAChildOfTheProducerSpan(t *testing.T) {
	client := oneNode(t)
	recorder := tracetest.NewSpanRecorder()
	provider := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	otel.SetTracerProvider(provider)
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	ctx, parent := provider.Tracer("test").Start(context.Background(), "checkout")
	id, err := client.Producer().Enqueue(ctx, "traced", []byte("x"))
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	if job, _ := client.GetJob(context.Background(), id); len(job.GetHeaders()["traceparent"]) == 0 {
		t.Fatal("no traceparent header")
	}
	inside := make(chan trace.SpanContext, 1)
	stop := run(t, raftq.NewWorker(client, "traced", func(ctx context.Context, _ *raftq.Job) error {
		inside <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	got := <-inside
	stop()
	var handler sdktrace.ReadOnlySpan
	for _, s := range recorder.Ended() {
		if s.Name() == "traced process" {
			handler = s
		}
	}
	if handler == nil {
		t.Fatal("no handler span")
	}
	if handler.SpanContext().TraceID() != parent.SpanContext().TraceID() || handler.Parent().SpanID() != parent.SpanContext().SpanID() ||
		got.SpanID() != handler.SpanContext().SpanID() || handler.SpanKind() != trace.SpanKindConsumer {
		t.Fatalf("handler span %v, parent %v", handler.SpanContext(), parent.SpanContext())
	}
}

func TestTLSTokensAndRoles(t *testing.T) {
	certs := newDevCerts(t)
	sum := sha256.Sum256([]byte("producer-only-token"))
	auth, err := os.OpenFile(filepath.Join(certs.dir, "auth.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(auth, "  - name: producer\n    tokens_sha256: ['%s']\n    grants:\n      - { role: produce, queues: ['*'] }\n", hex.EncodeToString(sum[:]))
	auth.Close()
	n := spawnCluster(t, 1, certs.nodeArgs...)[0]
	tls, err := raftq.TLSFromFiles(certs.ca, "", "")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := raftq.Dial(n.addr, raftq.WithTLS(tls), raftq.WithToken(certs.token))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	n.waitServing(t, func(ctx context.Context) error { _, err := admin.Stats(ctx, ""); return err })
	ctx := context.Background()
	if _, err := admin.Producer().Enqueue(ctx, "secure", []byte("x")); err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{}, 1)
	stop := run(t, raftq.NewWorker(admin, "secure", func(context.Context, *raftq.Job) error { handled <- struct{}{}; return nil }))
	<-handled
	stop()

	anonymous, _ := raftq.Dial("https://"+n.addr, raftq.WithTLS(tls))
	defer anonymous.Close()
	if _, err := anonymous.Producer().Enqueue(ctx, "secure", []byte("x")); code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	producer, _ := raftq.Dial(n.addr, raftq.WithTLS(tls), raftq.WithToken("producer-only-token"))
	defer producer.Close()
	if _, err := producer.Producer().Enqueue(ctx, "secure", []byte("y")); err != nil {
		t.Fatal(err)
	}
	err = raftq.NewWorker(producer, "secure", func(context.Context, *raftq.Job) error { return nil }).Run(ctx)
	var e *raftq.Error
	if !errors.As(err, &e) || e.Code != codes.PermissionDenied || !containsAll(e.Message, "consume", "producer") {
		t.Fatalf("a produce-only worker: %v", err)
	}
	plaintext, _ := raftq.Dial(n.addr)
	defer plaintext.Close()
	if _, err := plaintext.Producer(raftq.WithRetry(raftq.NoRetry)).Enqueue(ctx, "secure", []byte("x")); code(err) != codes.Unavailable {
		t.Fatalf("plaintext to a TLS port: %v", err)
	}
	if _, err := raftq.Dial("http://"+n.addr, raftq.WithTLS(tls)); err == nil {
		t.Fatal("http:// with TLS was accepted")
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestAWorkerCarriesOnWhenTheLeaderDies(t *testing.T) {
	nodes := spawnCluster(t, 3, "--shards", "1")
	var leaderID uint64
	waitFor(t, "a leader", 60*time.Second, func() bool {
		for _, n := range nodes {
			if s := n.status(); s != nil && len(s.GetShards()) > 0 && s.GetShards()[0].GetHasLeader() {
				leaderID = s.GetShards()[0].GetLeaderId()
				return true
			}
		}
		return false
	})
	var follower, dying = nodes[0], nodes[0]
	for _, n := range nodes {
		if uint64(n.id) == leaderID {
			dying = n
		} else {
			follower = n
		}
	}
	client, _ := raftq.Dial(follower.addr)
	defer client.Close()
	follower.waitServing(t, func(ctx context.Context) error { _, err := client.Stats(ctx, ""); return err })
	ids := enqueueN(t, client, "ha", "", 400)
	var mu sync.Mutex
	handled := map[string]bool{}
	fifty := make(chan struct{})
	stop := run(t, raftq.NewWorker(client, "ha", func(_ context.Context, job *raftq.Job) error {
		mu.Lock()
		handled[job.ID] = true
		if len(handled) == 50 {
			close(fifty)
		}
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // the work itself: the kill lands mid-run
		return nil
	}, raftq.Concurrency(4), raftq.Lease(2*time.Second), raftq.Logger(slog.New(slog.NewTextHandler(os.Stderr, nil)))))
	<-fifty
	dying.kill()
	ids = append(ids, enqueueN(t, client, "ha", "late ", 100)...)
	progress := "nothing yet"
	defer func() {
		if t.Failed() {
			t.Logf("progress when it failed: %s", progress)
			// Where the worker stands, for a failure seen only in CI.
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		}
	}()
	waitFor(t, "every job handled and acked after the leader died", 90*time.Second, func() bool {
		mu.Lock()
		for _, id := range ids {
			if !handled[id] {
				progress = fmt.Sprintf("%d of %d jobs handled", len(handled), len(ids))
				mu.Unlock()
				return false
			}
		}
		mu.Unlock()
		s := stats(t, client, "ha")
		progress = fmt.Sprintf("every job handled; stats %v", s)
		return s.GetReady() == 0 && s.GetLeased() == 0
	})
	stop()
}
