package dedup

import (
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
func NewClient(addr string) (rueidis.Client, error) {
	opt, err := options(addr)
	if err != nil {
		return nil, err
	}
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
	var opt rueidis.ClientOption
	if strings.Contains(seeds, "://") {
		var err error
		if opt, err = options(seeds); err != nil {
			return nil, err
		}
	} else {
		opt = base(strings.Split(seeds, ","))
	}
	return rueidis.NewClient(opt)
}

// Dial returns the store's client as a gate asks for it on every call. A single store's client
// is made at once (it connects on first use); a cluster's, which needs a node to answer, is
// made on first use and tried again at most once a second while no node answers.
func Dial(addr string, cluster bool) func() (rueidis.Client, error) {
	if !cluster {
		c, err := NewClient(addr)
		return func() (rueidis.Client, error) { return c, err }
	}
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
			c, err = NewClusterClient(addr)
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
	}
}
