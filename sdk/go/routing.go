package raftq

// Sending each queue's requests straight to its shard's leader.
//
// The client reads the shard map (Queue.GetShardMap) from the node it
// dialled, keeps a connection per leader, and sends a queue's requests to
// the leader of the queue's shard with the metadata "x-raftq-route:
// direct". A node that no longer leads answers UNAVAILABLE with the
// leader in its trailers: the route is updated and the retry goes there.
// Where the map says nothing (no leader yet, an address not known, a node
// without the call) or a leader cannot be reached, requests go to the
// node dialled, which forwards them.

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

const (
	// unreachableFor is how long a leader that could not be reached is
	// left alone.
	unreachableFor = 30 * time.Second
	// refreshAtMostEvery limits reading the map again.
	refreshAtMostEvery = 500 * time.Millisecond
)

type route struct {
	addr string
	term uint64
}

type router struct {
	dial func(addr string) (*grpc.ClientConn, error)

	mu         sync.Mutex
	shardCount uint32
	// Queues that stayed on their shard when the shard count grew.
	pinned         map[string]uint32
	routingVersion uint64
	leaders        map[uint32]route
	conns          map[string]*grpc.ClientConn
	unreachable    map[string]time.Time
	lastRead       time.Time
}

func newRouter(dial func(addr string) (*grpc.ClientConn, error)) *router {
	return &router{
		dial:        dial,
		leaders:     map[uint32]route{},
		conns:       map[string]*grpc.ClientConn{},
		unreachable: map[string]time.Time{},
	}
}

// ShardOf is the shard that holds queue among shards: FNV-1a-64 of its
// name, as every node computes it.
func ShardOf(queue string, shards uint32) uint32 {
	hash := uint64(0xcbf29ce484222325)
	for i := 0; i < len(queue); i++ {
		hash ^= uint64(queue[i])
		hash *= 0x100000001b3
	}
	return uint32(hash % uint64(max(shards, 1)))
}

// learnMap takes a map; a route older (lower term) than one known is
// ignored.
func (r *router) learnMap(m *pb.ShardMap) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.GetRoutingVersion() >= r.routingVersion {
		r.shardCount = m.GetShardCount()
		r.pinned = m.GetPinned()
		r.routingVersion = m.GetRoutingVersion()
	}
	for _, s := range m.GetShards() {
		if s.GetLeaderAddr() == "" {
			continue
		}
		if known, ok := r.leaders[s.GetShard()]; !ok || s.GetTerm() >= known.term {
			r.leaders[s.GetShard()] = route{addr: s.GetLeaderAddr(), term: s.GetTerm()}
		}
	}
}

// learnTrailer takes the leader a "not the leader" answer names; whether
// it named one (else the map should be read again).
func (r *router) learnTrailer(md metadata.MD) bool {
	first := func(key string) string {
		if v := md.Get(key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	shard, err1 := strconv.ParseUint(first("x-raftq-leader-shard"), 10, 32)
	term, err2 := strconv.ParseUint(first("x-raftq-leader-term"), 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// The shard count grew since the map was read: queues may live
	// elsewhere now.
	if version, err := strconv.ParseUint(first("x-raftq-routing-version"), 10, 64); err == nil && version > r.routingVersion {
		return false
	}
	addr := first("x-raftq-leader-addr")
	if addr == "" {
		delete(r.leaders, uint32(shard))
		return false
	}
	if known, ok := r.leaders[uint32(shard)]; !ok || term >= known.term {
		r.leaders[uint32(shard)] = route{addr: addr, term: term}
	}
	return true
}

func (r *router) refreshDue() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastRead) < refreshAtMostEvery {
		return false
	}
	r.lastRead = time.Now()
	return true
}

func (r *router) markUnreachable(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable[addr] = time.Now()
	if conn, ok := r.conns[addr]; ok {
		delete(r.conns, addr)
		go conn.Close()
	}
}

// leader is the connection to the leader of queue's shard, when known.
func (r *router) leader(queue string) (string, *grpc.ClientConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.shardCount == 0 {
		return "", nil
	}
	shard, pinned := r.pinned[queue]
	if !pinned {
		shard = ShardOf(queue, r.shardCount)
	}
	known, ok := r.leaders[shard]
	if !ok {
		return "", nil
	}
	if at, down := r.unreachable[known.addr]; down {
		if time.Since(at) < unreachableFor {
			return "", nil
		}
		delete(r.unreachable, known.addr)
	}
	if conn, ok := r.conns[known.addr]; ok {
		return known.addr, conn
	}
	conn, err := r.dial(known.addr)
	if err != nil {
		return "", nil
	}
	r.conns[known.addr] = conn
	return known.addr, conn
}

func (r *router) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr, conn := range r.conns {
		conn.Close()
		delete(r.conns, addr)
	}
}

// target is where one call for a queue goes.
type target struct {
	queue  pb.QueueClient
	leader string // "" for the node dialled
}

// forQueue is where queue's next call goes.
func (c *Client) forQueue(queue string) target {
	if c.router == nil {
		return target{queue: c.queue}
	}
	addr, conn := c.router.leader(queue)
	if conn == nil {
		return target{queue: c.queue}
	}
	return target{queue: pb.NewQueueClient(conn), leader: addr}
}

// context adds the token and, for a leader, the direct-route mark.
func (t target) context(c *Client, ctx context.Context) context.Context {
	ctx = c.Context(ctx)
	if t.leader != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-raftq-route", "direct")
	}
	return ctx
}

// observe learns from a call through t that failed with err and trailers.
func (c *Client) observe(ctx context.Context, t target, err error, trailer metadata.MD) {
	if c.router == nil || err == nil {
		return
	}
	if c.router.learnTrailer(trailer) {
		return
	}
	s, _ := status.FromError(err)
	if t.leader != "" && s.Code() == codes.Unavailable && isConnectionFailure(s.Message()) {
		c.router.markUnreachable(t.leader)
		return
	}
	if s.Code() == codes.Unavailable && c.router.refreshDue() {
		_ = c.RefreshShardMap(ctx)
	}
}

// isConnectionFailure tells a status gRPC made from a failed connection
// from one a node sent.
func isConnectionFailure(message string) bool {
	for _, mark := range []string{"connection error", "error reading from server", "dial", "connection refused", "no such host"} {
		if strings.Contains(message, mark) {
			return true
		}
	}
	return false
}

// RefreshShardMap reads the shard map from the node dialled. Done in the
// background after Dial and again when a leader moves; call it to route
// at once.
func (c *Client) RefreshShardMap(ctx context.Context) error {
	if c.router == nil {
		return nil
	}
	m, err := c.queue.GetShardMap(c.Context(ctx), &pb.GetShardMapRequest{})
	if err != nil {
		return asError(err)
	}
	c.router.learnMap(m)
	return nil
}
