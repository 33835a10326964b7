package raftq_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	raftq "github.com/raftq/raftq/sdk/go"
	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// forwarded sums raftq_forwarded_requests_total over the nodes' metrics.
func forwarded(t *testing.T, httpAddrs []string) float64 {
	t.Helper()
	total := 0.0
	for _, addr := range httpAddrs {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "raftq_forwarded_requests_total{") {
				fields := strings.Fields(line)
				v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
				if err != nil {
					t.Fatalf("metric line %q: %v", line, err)
				}
				total += v
			}
		}
	}
	return total
}

// queueOn is a queue name on shard of shards.
func queueOn(shard, shards uint32, tag string) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("%s-%d", tag, i)
		if raftq.ShardOf(name, shards) == shard {
			return name
		}
	}
}

// The client reads the shard map and sends each queue's producer and
// worker calls to its shard's leader: no node forwards any of them, while
// a client without routing has its calls forwarded.
func TestCallsGoStraightToTheShardLeaders(t *testing.T) {
	const shards = 4
	root := t.TempDir()
	var nodes []*node
	var httpAddrs, members []string
	peers := make([]string, 3)
	for i := range peers {
		peers[i] = freeAddr(t)
		members = append(members, fmt.Sprintf("%d=%s", i+1, peers[i]))
	}
	for i := range peers {
		httpAddr := freeAddr(t)
		httpAddrs = append(httpAddrs, httpAddr)
		n := &node{id: i + 1, addr: freeAddr(t), peerAddr: peers[i], dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			members: strings.Join(members, ","), extra: []string{"--shards", fmt.Sprint(shards), "--http-listen", httpAddr}}
		n.start(t)
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	client, err := raftq.Dial(nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nodes[0].waitServing(t, func(ctx context.Context) error { _, err := client.Stats(ctx, ""); return err })
	ctx := context.Background()
	// Every node knows every leader's client address.
	for _, n := range nodes {
		other, err := raftq.Dial(n.addr, raftq.WithoutLeaderRouting())
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a complete shard map", 30*time.Second, func() bool {
			m, err := other.Queue().GetShardMap(ctx, &pb.GetShardMapRequest{Queues: []string{"emails", "q-17"}})
			if err != nil || len(m.GetShards()) != shards {
				return false
			}
			for _, s := range m.GetShards() {
				if s.GetLeaderAddr() == "" {
					return false
				}
			}
			// The SDK's hash is the nodes'.
			for q, s := range m.GetQueues() {
				if raftq.ShardOf(q, shards) != s {
					t.Fatalf("ShardOf(%q) = %d, the node says %d", q, raftq.ShardOf(q, shards), s)
				}
			}
			return true
		})
		other.Close()
	}
	if err := client.RefreshShardMap(ctx); err != nil {
		t.Fatal(err)
	}

	before := forwarded(t, httpAddrs)
	producer := client.Producer()
	for s := uint32(0); s < shards; s++ {
		queue := queueOn(s, shards, "routed")
		for range 5 {
			if _, err := producer.Enqueue(ctx, queue, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		stop := run(t, raftq.NewWorker(client, queue, func(context.Context, *raftq.Job) error {
			return nil
		}, raftq.Concurrency(4)))
		waitFor(t, "the queue's jobs acked", 30*time.Second, func() bool { return stats(t, client, queue).GetAckedTotal() == 5 })
		stop()
	}
	if after := forwarded(t, httpAddrs); after != before {
		t.Fatalf("%v requests were forwarded; a routing client sends none", after-before)
	}

	// Without routing, the node dialled forwards what it does not lead.
	plain, err := raftq.Dial(nodes[0].addr, raftq.WithoutLeaderRouting())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for s := uint32(0); s < shards; s++ {
		if _, err := plain.Producer().Enqueue(ctx, queueOn(s, shards, "plain"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	leads := 0
	if st := nodes[0].status(); st != nil {
		for _, s := range st.GetShards() {
			if s.GetRole() == "leader" {
				leads++
			}
		}
	}
	if got := forwarded(t, httpAddrs) - before; got != float64(shards-leads) {
		t.Fatalf("%v requests forwarded without routing; node 1 leads %d of %d shards", got, leads, shards)
	}
}

// Queues that held jobs when the shard count grew stay on their shard (the
// map pins them); the client sends them there, and new queues by the new
// hash, with nothing forwarded.
func TestQueuesAreRoutedToTheirShardsAfterTheShardCountGrows(t *testing.T) {
	root := t.TempDir()
	var nodes []*node
	var httpAddrs, members []string
	peers := make([]string, 3)
	for i := range peers {
		peers[i] = freeAddr(t)
		members = append(members, fmt.Sprintf("%d=%s", i+1, peers[i]))
	}
	for i := range peers {
		httpAddr := freeAddr(t)
		httpAddrs = append(httpAddrs, httpAddr)
		n := &node{id: i + 1, addr: freeAddr(t), peerAddr: peers[i], dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			members: strings.Join(members, ","), extra: []string{"--shards", "2", "--replication-factor", "3", "--http-listen", httpAddr}}
		n.start(t)
		nodes = append(nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	client, err := raftq.Dial(nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	for _, n := range nodes {
		n.waitServing(t, func(ctx context.Context) error { _, err := client.Stats(ctx, ""); return err })
	}
	ctx := context.Background()
	var moving []string
	for i := 0; len(moving) < 8; i++ {
		q := fmt.Sprintf("parked-%d", i)
		if raftq.ShardOf(q, 2) != raftq.ShardOf(q, 4) {
			moving = append(moving, q)
		}
	}
	producer := client.Producer()
	for _, q := range moving {
		if _, err := producer.Enqueue(ctx, q, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(binary(t, "raftq"), "--peer-addr", peers[1], "cluster", "grow-shards", "4").CombinedOutput()
	if err != nil {
		t.Fatalf("grow-shards: %v\n%s", err, out)
	}
	// The client's map is from before: a new queue on a new shard still
	// lands there (the node's answer makes it read the map).
	id, err := producer.Enqueue(ctx, queueOn(3, 4, "fresh"), []byte("x"))
	if err != nil || !strings.HasPrefix(id, "3-") {
		t.Fatalf("enqueue on a new shard: %q, %v", id, err)
	}
	waitFor(t, "every node to know the 4 shards' leaders", 30*time.Second, func() bool {
		m, err := client.Queue().GetShardMap(ctx, &pb.GetShardMapRequest{Queues: moving})
		if err != nil || m.GetShardCount() != 4 {
			return false
		}
		for _, s := range m.GetShards() {
			if s.GetLeaderAddr() == "" {
				return false
			}
		}
		return true
	})
	if err := client.RefreshShardMap(ctx); err != nil {
		t.Fatal(err)
	}
	before := forwarded(t, httpAddrs)
	for _, q := range moving {
		id, err := producer.Enqueue(ctx, q, []byte("after"))
		if err != nil || !strings.HasPrefix(id, fmt.Sprintf("%d-", raftq.ShardOf(q, 2))) {
			t.Fatalf("enqueue on pinned %s: %q, %v", q, id, err)
		}
	}
	for s := uint32(0); s < 4; s++ {
		id, err := producer.Enqueue(ctx, queueOn(s, 4, "new"), []byte("x"))
		if err != nil || !strings.HasPrefix(id, fmt.Sprintf("%d-", s)) {
			t.Fatalf("enqueue on shard %d: %q, %v", s, id, err)
		}
	}
	if after := forwarded(t, httpAddrs); after != before {
		t.Fatalf("%v requests were forwarded; a routing client sends none", after-before)
	}
}
