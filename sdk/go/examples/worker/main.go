// A producer and a worker against a local node (./scripts/node.sh).
//
//	go run ./examples/worker [address]
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	raftq "github.com/raftq/raftq/sdk/go"
)

func main() {
	address := "127.0.0.1:7400"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	client, err := raftq.Dial(address)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for i := range 5 {
		if _, err := client.Producer().Enqueue(ctx, "emails", fmt.Appendf(nil, "hello %d", i), raftq.Header("example", "true")); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("working; Ctrl-C stops after the running jobs finish")
	err = raftq.NewWorker(client, "emails", func(ctx context.Context, job *raftq.Job) error {
		if string(job.Payload) == "poison" {
			return raftq.Dead(errors.New("cannot handle this one"))
		}
		fmt.Printf("%s attempt %d: %s\n", job.ID, job.Attempt, job.Payload)
		return nil
	}, raftq.Concurrency(4)).Run(ctx)
	if err != nil {
		log.Fatal(err)
	}
}
