package results

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// errStreamLimit: the viewer already holds the maximum number of streams.
var errStreamLimit = errors.New("too many concurrent streams for this viewer")

// Leases of the Redis-backed limit: each open stream holds a member of a sorted set per viewer,
// scored with its expiry. A worker that crashes leaves leases that expire after leaseTTL, so a
// viewer is never locked out for longer than that.
const (
	leaseTTL     = 90 * time.Second
	leaseRefresh = 30 * time.Second
)

// acquireScript drops expired leases, then adds one if the viewer is below the limit.
// KEYS[1] viewer's set; ARGV: now ms, expiry ms, limit, lease id, key TTL ms.
var acquireScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`)

func streamsKey(viewer string) string { return "results:streams:" + viewer }

// streamLimits enforces "at most N concurrent streams per viewer". Locally always; across all
// workers when Redis is configured. If Redis fails, the local count decides: a Redis outage
// must not take the on-air streams down with it.
type streamLimits struct {
	max     int
	rdb     *redis.Client // nil: local only
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	local  map[string]int
	leases map[string]map[string]struct{} // viewer → lease ids this process holds in Redis
}

func newStreamLimits(max int, rdb *redis.Client, log *slog.Logger, m *metrics) *streamLimits {
	return &streamLimits{max: max, rdb: rdb, log: log, metrics: m, local: map[string]int{}, leases: map[string]map[string]struct{}{}}
}

// acquire takes one stream slot for viewer; release must be called exactly once when the
// stream ends.
func (l *streamLimits) acquire(ctx context.Context, viewer string) (release func(), err error) {
	l.mu.Lock()
	if l.local[viewer] >= l.max {
		l.mu.Unlock()
		return nil, errStreamLimit
	}
	l.local[viewer]++ // reserve before the Redis round trip, so local races cannot overshoot
	l.mu.Unlock()

	lease := ""
	if l.rdb != nil {
		id := uuid.NewString()
		rctx, cancel := context.WithTimeout(ctx, redisTimeout)
		now := time.Now()
		ok, err := acquireScript.Run(rctx, l.rdb, []string{streamsKey(viewer)},
			now.UnixMilli(), now.Add(leaseTTL).UnixMilli(), l.max, id, leaseTTL.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			l.metrics.limiterErrors.Inc()
			l.log.Warn("stream limit: redis unavailable, local limit only", "err", err)
		case ok == 0:
			l.releaseLocal(viewer)
			return nil, errStreamLimit
		default:
			lease = id
			l.mu.Lock()
			if l.leases[viewer] == nil {
				l.leases[viewer] = map[string]struct{}{}
			}
			l.leases[viewer][id] = struct{}{}
			l.mu.Unlock()
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.releaseLocal(viewer)
			if lease == "" {
				return
			}
			l.mu.Lock()
			delete(l.leases[viewer], lease)
			if len(l.leases[viewer]) == 0 {
				delete(l.leases, viewer)
			}
			l.mu.Unlock()
			rctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
			defer cancel()
			if err := l.rdb.ZRem(rctx, streamsKey(viewer), lease).Err(); err != nil {
				l.metrics.limiterErrors.Inc() // the lease expires on its own
			}
		})
	}, nil
}

func (l *streamLimits) releaseLocal(viewer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.local[viewer]--; l.local[viewer] <= 0 {
		delete(l.local, viewer)
	}
}

// run keeps this process's leases alive until ctx ends.
func (l *streamLimits) run(ctx context.Context) {
	if l.rdb == nil {
		return
	}
	t := time.NewTicker(leaseRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		expiry := float64(time.Now().Add(leaseTTL).UnixMilli())
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pipe := l.rdb.Pipeline()
		for viewer, ids := range l.leases {
			for id := range ids {
				// XX: refresh only; a lease that expired meanwhile is not resurrected.
				pipe.ZAddXX(rctx, streamsKey(viewer), redis.Z{Score: expiry, Member: id})
			}
			pipe.PExpire(rctx, streamsKey(viewer), leaseTTL)
		}
		l.mu.Unlock()
		if _, err := pipe.Exec(rctx); err != nil && !errors.Is(err, redis.Nil) {
			l.metrics.limiterErrors.Inc()
			l.log.Warn("stream limit: lease refresh failed", "err", err)
		}
		cancel()
	}
}
