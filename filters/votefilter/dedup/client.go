package dedup

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// NewClient connects to a single store at addr: host:port, or a redis:// or rediss:// URL.
//
// Concurrent calls are pipelined automatically over a few connections, so many votes in
// flight share each round trip and its syscalls. The client never resends a command on its
// own: a script that timed out may still run, and only the caller knows whether running it
// twice is safe. The first connection is made on first use, so a store that is down when the
// config arrives delays votes (503) instead of failing the config.
func NewClient(addr string) (rueidis.Client, error) { return newClient(Endpoint{Addr: addr}) }

func newClient(e Endpoint) (rueidis.Client, error) {
	opt, err := options(e.Addr)
	if err != nil {
		return nil, err
	}
	opt = withEndpoint(opt, e)
	opt.ForceSingleClient = true
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, err
	}
	return c, nil
}

// NewClusterClient connects to a Redis Cluster through its seed nodes (comma-separated
// host:port, or one configuration endpoint, or a redis:// URL): every command goes to the
// primary of its key's slot, and a failover is followed from the cluster's own slot map. It
// fails when no seed answers.
func NewClusterClient(seeds string) (rueidis.Client, error) {
	return newClusterClient(Endpoint{Addr: seeds, Cluster: true})
}

func newClusterClient(e Endpoint) (rueidis.Client, error) {
	var opt rueidis.ClientOption
	if strings.Contains(e.Addr, "://") {
		var err error
		if opt, err = options(e.Addr); err != nil {
			return nil, err
		}
	} else {
		var seeds []string
		for _, s := range strings.Split(e.Addr, ",") {
			if s = strings.TrimSpace(s); s != "" {
				seeds = append(seeds, s)
			}
		}
		opt = base(seeds)
	}
	return rueidis.NewClient(withEndpoint(opt, e))
}

// Endpoint is where the admission store is and how to reach it.
type Endpoint struct {
	// Addr is host:port (or a redis:// URL); for a cluster, seed nodes, comma-separated, or
	// the configuration endpoint.
	Addr    string
	Cluster bool
	// TLS encrypts the connections (ElastiCache with encryption in transit).
	TLS bool
	// Password, when set, is asked for the AUTH token on every new connection, so a rotated
	// token is used from the next connection on without a new client.
	Password func() string
}

// withEndpoint adds e's TLS and AUTH to opt.
func withEndpoint(opt rueidis.ClientOption, e Endpoint) rueidis.ClientOption {
	if e.TLS && opt.TLSConfig == nil {
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if e.Password != nil {
		opt.AuthCredentialsFn = func(rueidis.AuthCredentialsContext) (rueidis.AuthCredentials, error) {
			return rueidis.AuthCredentials{Password: e.Password()}, nil
		}
	}
	return opt
}

// Dial returns the store's client as a gate asks for it on every call. A single store's client
// is made at once (it connects on first use); a cluster's, which needs a node to answer, is
// made on first use and tried again at most once a second while no node answers.
func Dial(e Endpoint) func() (rueidis.Client, error) {
	if !e.Cluster {
		c, err := newClient(e)
		return func() (rueidis.Client, error) { return c, err }
	}
	addr := e.Addr
	var (
		mu   sync.Mutex
		c    rueidis.Client
		err  error
		last time.Time
	)
	return func() (rueidis.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		if c == nil && time.Since(last) >= time.Second {
			last = time.Now()
			c, err = newClusterClient(e)
		}
		if c == nil {
			return nil, fmt.Errorf("redis cluster %s: %w", addr, err)
		}
		return c, nil
	}
}

func options(addr string) (rueidis.ClientOption, error) {
	if !strings.Contains(addr, "://") {
		return base([]string{addr}), nil
	}
	opt, err := rueidis.ParseURL(addr)
	if err != nil {
		return opt, fmt.Errorf("redis address: %w", err)
	}
	b := base(opt.InitAddress)
	b.Username, b.Password, b.TLSConfig, b.SelectDB = opt.Username, opt.Password, opt.TLSConfig, opt.SelectDB
	return b, nil
}

func base(addrs []string) rueidis.ClientOption {
	return rueidis.ClientOption{
		InitAddress:  addrs,
		DisableCache: true,
		// Reads would otherwise be retried until their deadline: a store that is down must fail
		// fast, so the edge can answer (or fall back to PostgreSQL) within its budget.
		DisableRetry: true,
		Dialer:       net.Dialer{Timeout: time.Second, KeepAlive: time.Second},
		// A hung server is detected within ConnWriteTimeout and its connection replaced.
		ConnWriteTimeout: 5 * time.Second,
		// Two connections per node, and a write waits up to 20 µs for more commands to join it:
		// with 64 votes in flight that cut the client's CPU per vote by a third and its system
		// time by half against four connections flushed at once (BenchmarkPipelining), for at
		// most 20 µs more per round trip.
		PipelineMultiplex: 1,
		MaxFlushDelay:     20 * time.Microsecond,
	}
}
