package raftq_test

// Real queue-node processes for the SDK's tests. The binaries come from
// RAFTQ_BIN_DIR, or else $CARGO_TARGET_DIR (default the repository's
// target)/debug; scripts/sdk-test.sh builds them first.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

func binary(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("RAFTQ_BIN_DIR")
	if dir == "" {
		target := os.Getenv("CARGO_TARGET_DIR")
		if target == "" {
			target = filepath.Join("..", "..", "target")
		}
		dir = filepath.Join(target, "debug")
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found: build it with `cargo build --workspace` (or set RAFTQ_BIN_DIR)", path)
	}
	return path
}

// nextPort walks the ports below the kernel's ephemeral range, starting at
// an offset spread by process so concurrent test binaries seldom collide.
var nextPort atomic.Uint32

// freeAddr is a loopback address free now and outside the ephemeral range:
// a port picked by binding port 0 comes from that range, and before (or
// while restarting) its node listens, an outgoing connection can be given
// it, so the node cannot listen ("Address already in use").
func freeAddr(t *testing.T) string {
	t.Helper()
	const lowest = 10_000
	ephemeralStart := uint32(32_768)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if fields := strings.Fields(string(b)); len(fields) > 0 {
			if p, err := strconv.Atoi(fields[0]); err == nil && p > lowest+1_000 {
				ephemeralStart = uint32(p)
			}
		}
	}
	span := ephemeralStart - lowest
	offset := uint32(os.Getpid()) * 7_919 % span
	for range span {
		port := lowest + (offset+nextPort.Add(1))%span
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return l.Addr().String()
		}
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// waitFor polls check until it returns true.
func waitFor(t *testing.T, what string, timeout time.Duration, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type node struct {
	id             int
	addr, peerAddr string
	dir, members   string
	extra          []string
	cmd            *exec.Cmd
	// exited is closed once the process has been reaped.
	exited chan struct{}
}

func (n *node) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(n.dir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	args := append([]string{"--node-id", fmt.Sprint(n.id), "--listen", n.addr, "--peer-listen", n.peerAddr,
		"--data-dir", n.dir, "--initial-members", n.members}, n.extra...)
	n.cmd = exec.Command(binary(t, "queue-node"), args...)
	n.cmd.Stderr = log
	n.cmd.Env = append(os.Environ(), "RAFTQ_LOG=info,openraft=warn")
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd, exited := n.cmd, make(chan struct{})
	n.exited = exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
}

// hasExited reports whether the running process ended on its own.
func (n *node) hasExited() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return true
	default:
		return false
	}
}

func (n *node) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		<-n.exited
		n.cmd = nil
	}
}

func (n *node) log() string {
	b, _ := os.ReadFile(n.dir + ".log")
	return string(b)
}

// status is the node's Raft status from its peer port (nil while down).
func (n *node) status() *pb.ClusterStatus {
	conn, err := grpc.NewClient("passthrough:///"+n.peerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := pb.NewClusterAdminClient(conn).Status(ctx, &pb.ClusterStatusRequest{})
	if err != nil {
		return nil
	}
	return s
}

// waitServing waits until stats answers (every shard has a leader).
func (n *node) waitServing(t *testing.T, stats func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if n.hasExited() {
			t.Fatalf("queue-node %d exited:\n%s", n.id, n.log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := stats(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for node %d to serve (last: %v); its log:\n%s", n.id, err, n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func spawnCluster(t *testing.T, count int, extra ...string) []*node {
	t.Helper()
	root := t.TempDir()
	peers := make([]string, count)
	members := make([]string, count)
	for i := range peers {
		peers[i] = freeAddr(t)
		members[i] = fmt.Sprintf("%d=%s", i+1, peers[i])
	}
	nodes := make([]*node, count)
	for i := range nodes {
		nodes[i] = &node{id: i + 1, addr: freeAddr(t), peerAddr: peers[i], dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)),
			members: strings.Join(members, ","), extra: extra}
		nodes[i].start(t)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	return nodes
}

type devCerts struct {
	dir, ca, token string
	nodeArgs       []string
}

// newDevCerts runs `raftq dev-certs`: a CA, a node certificate, an admin
// token and an auth file.
func newDevCerts(t *testing.T) devCerts {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if out, err := exec.Command(binary(t, "raftq"), "dev-certs", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("raftq dev-certs: %v\n%s", err, out)
	}
	token, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	j := func(name string) string { return filepath.Join(dir, name) }
	return devCerts{dir: dir, ca: j("ca.pem"), token: strings.TrimSpace(string(token)), nodeArgs: []string{
		"--tls-cert", j("node.pem"), "--tls-key", j("node-key.pem"), "--tls-ca", j("ca.pem"), "--auth-file", j("auth.yaml")}}
}
