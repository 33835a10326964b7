package raftq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	pb "github.com/raftq/raftq/sdk/go/raftqpb"
)

// Client is a connection to a raftq node. Any node will do: it forwards
// each call to its shard's leader. The client also reads the shard map
// and sends producers' and workers' calls straight to the leaders
// ([WithoutLeaderRouting] turns that off). Safe for concurrent use.
type Client struct {
	conn  *grpc.ClientConn
	queue pb.QueueClient
	admin pb.QueueAdminClient
	token string
	// router sends a queue's calls to its shard's leader; nil when off.
	router *router
}

// TLS says how to verify the node and, optionally, who the client is.
type TLS struct {
	// CACertPEM is the CA that signed the node's certificate; empty trusts
	// the system's roots.
	CACertPEM []byte
	// CertPEM and KeyPEM are a client certificate: the caller is then the
	// principal its SAN or CN names.
	CertPEM, KeyPEM []byte
	// ServerName is the name the node's certificate must carry when it
	// differs from the host connected to.
	ServerName string
}

// TLSFromFiles reads a CA certificate (and, when both are given, a client
// certificate and key) from PEM files.
func TLSFromFiles(caFile, certFile, keyFile string) (TLS, error) {
	var t TLS
	var err error
	if caFile != "" {
		if t.CACertPEM, err = os.ReadFile(caFile); err != nil {
			return t, fmt.Errorf("reading the CA certificate: %w", err)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return t, errors.New("a client certificate needs both a certificate and a key file")
	}
	if certFile != "" {
		if t.CertPEM, err = os.ReadFile(certFile); err != nil {
			return t, fmt.Errorf("reading the client certificate: %w", err)
		}
		if t.KeyPEM, err = os.ReadFile(keyFile); err != nil {
			return t, fmt.Errorf("reading the client key: %w", err)
		}
	}
	return t, nil
}

type dialOptions struct {
	tls      *TLS
	token    string
	extra    []grpc.DialOption
	noRoutes bool
}

// Option configures [Dial].
type Option func(*dialOptions)

// WithTLS connects over TLS.
func WithTLS(t TLS) Option { return func(o *dialOptions) { o.tls = &t } }

// WithToken sends a bearer token with every call.
func WithToken(token string) Option {
	return func(o *dialOptions) { o.token = strings.TrimSpace(token) }
}

// WithoutLeaderRouting sends every call to the node dialled, which
// forwards it: for a client that can reach that node only (a
// port-forward, a proxy).
func WithoutLeaderRouting() Option { return func(o *dialOptions) { o.noRoutes = true } }

// WithDialOptions adds gRPC dial options (interceptors, a custom dialer).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *dialOptions) { o.extra = append(o.extra, opts...) }
}

// Dial connects to a node at address (host:port, or https://host:port
// with TLS). The connection is made lazily; a node that is down shows as
// a retryable error on the first call.
func Dial(address string, opts ...Option) (*Client, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	target, err := dialTarget(address, o.tls != nil)
	if err != nil {
		return nil, err
	}
	for _, r := range o.token {
		if r < 0x20 || r > 0x7e {
			return nil, errors.New("the token must be printable ASCII")
		}
	}
	creds := insecure.NewCredentials()
	if o.tls != nil {
		config, err := o.tls.config()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(config)
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second}),
	}, o.extra...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", address, err)
	}
	c := &Client{conn: conn, queue: pb.NewQueueClient(conn), admin: pb.NewQueueAdminClient(conn), token: o.token}
	if !o.noRoutes {
		c.router = newRouter(func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient("passthrough:///"+addr, dial...)
		})
		// In the background: until the map is read, calls go to the node
		// dialled, which forwards them.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = c.RefreshShardMap(ctx)
		}()
	}
	return c, nil
}

func dialTarget(address string, withTLS bool) (string, error) {
	scheme, rest, found := strings.Cut(address, "://")
	if !found {
		return "passthrough:///" + strings.TrimSuffix(address, "/"), nil
	}
	switch {
	case scheme == "http" && withTLS:
		return "", fmt.Errorf("%s: an http:// address with TLS on; use https:// or host:port", address)
	case scheme == "https" && !withTLS:
		return "", fmt.Errorf("%s: an https:// address needs TLS settings (WithTLS)", address)
	case scheme != "http" && scheme != "https":
		return "", fmt.Errorf("%s: unknown scheme %q; use host:port", address, scheme)
	}
	return "passthrough:///" + strings.TrimSuffix(rest, "/"), nil
}

func (t *TLS) config() (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if len(t.CACertPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.CACertPEM) {
			return nil, errors.New("the CA certificate holds no PEM certificate")
		}
		config.RootCAs = pool
	}
	if (len(t.CertPEM) == 0) != (len(t.KeyPEM) == 0) {
		return nil, errors.New("a client certificate needs both CertPEM and KeyPEM")
	}
	if len(t.CertPEM) > 0 {
		pair, err := tls.X509KeyPair(t.CertPEM, t.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("the client certificate: %w", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

// Close closes the connections.
func (c *Client) Close() error {
	if c.router != nil {
		c.router.close()
	}
	return c.conn.Close()
}

// Queue is the generated client of the Queue service, for calls the SDK
// does not wrap. Pass contexts through [Client.Context] to add the token.
func (c *Client) Queue() pb.QueueClient { return c.queue }

// Admin is the generated client of the QueueAdmin service.
func (c *Client) Admin() pb.QueueAdminClient { return c.admin }

// Context adds the client's token, if any, to ctx's outgoing metadata.
func (c *Client) Context(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// Producer enqueues jobs through this client.
func (c *Client) Producer(opts ...ProducerOption) *Producer {
	p := &Producer{client: c, retry: DefaultRetry}
	for _, opt := range opts {
		opt(p)
	}
	return p
}

// Stats counts each queue's jobs (every queue when queue is empty).
func (c *Client) Stats(ctx context.Context, queue string) ([]*pb.QueueStats, error) {
	resp, err := retryCall(ctx, DefaultRetry, func(ctx context.Context) (*pb.StatsResponse, error) {
		return c.admin.Stats(c.Context(ctx), &pb.StatsRequest{Queue: queue})
	})
	if err != nil {
		return nil, err
	}
	return resp.GetQueues(), nil
}

// GetJob reads a job's record.
func (c *Client) GetJob(ctx context.Context, id string) (*pb.Job, error) {
	return retryCall(ctx, DefaultRetry, func(ctx context.Context) (*pb.Job, error) {
		return c.admin.GetJob(c.Context(ctx), &pb.JobRef{JobId: id})
	})
}

// Leases by hand, for code that does not use a Worker: Fetch, then Ack,
// Nack or Extend each job with the token it came with. A token from an
// earlier delivery is refused (codes.FailedPrecondition, "lease lost").

// FetchOptions tune [Client.Fetch].
type FetchOptions struct {
	// MaxJobs is how many jobs to lease at most (default 1).
	MaxJobs uint32
	// Lease is the lease asked for (default: the queue's).
	Lease time.Duration
	// Wait is how long to wait for a job when none is ready.
	Wait     time.Duration
	WorkerID string
}

// Fetch leases up to opts.MaxJobs ready jobs.
func (c *Client) Fetch(ctx context.Context, queue string, opts FetchOptions) ([]*Job, error) {
	req := &pb.FetchRequest{Queue: queue, WorkerId: opts.WorkerID, MaxJobs: max(opts.MaxJobs, 1), WaitMs: opts.Wait.Milliseconds()}
	if opts.Lease > 0 {
		ms := opts.Lease.Milliseconds()
		req.LeaseMs = &ms
	}
	resp, err := retryCall(ctx, DefaultRetry, func(ctx context.Context) (*pb.FetchResponse, error) {
		return c.queue.Fetch(c.Context(ctx), req)
	})
	if err != nil {
		return nil, err
	}
	jobs := make([]*Job, 0, len(resp.GetJobs()))
	for _, leased := range resp.GetJobs() {
		jobs = append(jobs, jobFromLeased(leased))
	}
	return jobs, nil
}

// Ack marks the job done.
func (c *Client) Ack(ctx context.Context, job *Job) error {
	resp, err := c.queue.Ack(c.Context(ctx), &pb.AckRequest{Tokens: []*pb.LeaseToken{job.Token}})
	if err != nil {
		return asError(err)
	}
	_, err = oneResult(resp.GetResults(), job)
	return err
}

// Nack gives the job back with an error: it retries after its backoff (or
// retryAfter when > 0), or goes to the dead letters when dead is true.
func (c *Client) Nack(ctx context.Context, job *Job, reason string, retryAfter time.Duration, dead bool) error {
	item := &pb.NackItem{Token: job.Token, Error: errorText(reason), Dead: dead}
	if retryAfter > 0 {
		ms := retryAfter.Milliseconds()
		item.RetryDelayMs = &ms
	}
	resp, err := c.queue.Nack(c.Context(ctx), &pb.NackRequest{Items: []*pb.NackItem{item}})
	if err != nil {
		return asError(err)
	}
	_, err = oneResult(resp.GetResults(), job)
	return err
}

// Extend extends the job's lease by lease from now (0: the queue's
// default) and returns the new expiry.
func (c *Client) Extend(ctx context.Context, job *Job, lease time.Duration) (time.Time, error) {
	req := &pb.ExtendLeaseRequest{Tokens: []*pb.LeaseToken{job.Token}}
	if lease > 0 {
		ms := lease.Milliseconds()
		req.LeaseMs = &ms
	}
	resp, err := c.queue.ExtendLease(c.Context(ctx), req)
	if err != nil {
		return time.Time{}, asError(err)
	}
	result, err := oneResult(resp.GetResults(), job)
	if err != nil {
		return time.Time{}, err
	}
	job.LeaseExpiresAt = time.UnixMilli(result.GetLeaseExpiresAtMs())
	return job.LeaseExpiresAt, nil
}

func oneResult(results []*pb.TokenResult, job *Job) (*pb.TokenResult, error) {
	if len(results) != 1 {
		return nil, fmt.Errorf("the node answered %d results for job %s", len(results), job.ID)
	}
	return results[0], nil
}
