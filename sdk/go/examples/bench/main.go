// How many jobs one worker process acks per second with a no-op handler.
//
//	go run ./examples/bench -address 127.0.0.1:7400 -jobs 500000 -concurrency 256
//
// -no-routing sends every call to -address, which forwards it to the
// leader, instead of straight to the leader the shard map names.
//
// Enqueues the jobs first (in batches), then times the worker until every
// one is acked (read from the queue's acked_total).
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"syscall"
	"time"

	raftq "github.com/raftq/raftq/sdk/go"
)

func main() {
	address := flag.String("address", "127.0.0.1:7400", "a node's client address")
	jobs := flag.Int("jobs", 500_000, "jobs to process")
	concurrency := flag.Int("concurrency", 256, "handlers at once (prefetch the same)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the timed part to this file")
	noRouting := flag.Bool("no-routing", false, "send every call to -address, which forwards it, instead of to the shard leaders")
	flag.Parse()
	var opts []raftq.Option
	if *noRouting {
		opts = append(opts, raftq.WithoutLeaderRouting())
	}
	client, err := raftq.Dial(*address, opts...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	queue := "bench-go-" + rand.Text()[:8]
	batch := make([]raftq.NewJob, 5000)
	for i := range batch {
		batch[i] = raftq.NewJob{Payload: []byte("xxxxxxxxxxxxxxxx")}
	}
	for start := 0; start < *jobs; start += len(batch) {
		if _, err := client.Producer().EnqueueMany(ctx, queue, batch[:min(len(batch), *jobs-start)]); err != nil {
			log.Fatal(err)
		}
	}
	acked := func() uint64 {
		stats, err := client.Stats(ctx, queue)
		if err != nil {
			log.Fatal(err)
		}
		for _, q := range stats {
			if q.GetQueue() == queue {
				return q.GetAckedTotal()
			}
		}
		return 0
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	cpuBefore := cpuTime()
	started := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	worker := raftq.NewWorker(client, queue, func(context.Context, *raftq.Job) error { return nil },
		raftq.Concurrency(*concurrency), raftq.Prefetch(*concurrency))
	go func() { done <- worker.Run(runCtx) }()
	for acked() < uint64(*jobs) {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	elapsed := time.Since(started)
	cpu := cpuTime() - cpuBefore
	fmt.Printf("go: %d jobs in %.2fs = %.0f jobs/s; worker CPU %.2f µs/job\n", *jobs, elapsed.Seconds(),
		float64(*jobs)/elapsed.Seconds(), float64(cpu.Microseconds())/float64(*jobs))
}

// cpuTime is the CPU (user + system) this process has used.
func cpuTime() time.Duration {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
