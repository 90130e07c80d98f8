package dedup

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// NewClient connects to the store at addr: host:port, or a redis:// or rediss:// URL.
//
// Concurrent calls are pipelined automatically over a few connections, so many votes in
// flight share each round trip and its syscalls. The client never resends a command on its
// own: a script that timed out may still run, and only the caller knows whether running it
// twice is safe. The first connection is made on first use, so a store that is down when the
// config arrives delays votes (503) instead of failing the config.
func NewClient(addr string) (rueidis.Client, error) {
	opt := rueidis.ClientOption{InitAddress: []string{addr}}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = rueidis.ParseURL(addr); err != nil {
			return nil, fmt.Errorf("redis address: %w", err)
		}
	}
	opt.ForceSingleClient = true
	opt.DisableCache = true
	// Reads would otherwise be retried until their deadline: a store that is down must fail
	// fast, so the edge can answer (or fall back to PostgreSQL) within its budget.
	opt.DisableRetry = true
	opt.Dialer = net.Dialer{Timeout: time.Second, KeepAlive: time.Second}
	// A hung server is detected within ConnWriteTimeout and its connection replaced.
	opt.ConnWriteTimeout = 5 * time.Second
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, err
	}
	return c, nil
}
