package results

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/contract"
)

// redisTTL is the contract's "cached in Redis for 5 minutes". Every change rewrites the key,
// status changes included, which is the contract's "invalidated on status change".
const redisTTL = 5 * time.Minute

// redisTimeout bounds every Redis call: Redis is an accelerator here, never worth waiting for.
const redisTimeout = 500 * time.Millisecond

// ResultsKey is the contract's cache key of an election's results.
func ResultsKey(electionID string) string { return "election:results:" + electionID }

// cachedResults is the value at ResultsKey: the contract's ElectionResults (so any reader of the
// key gets the documented shape) plus the timestamps this worker needs to rebuild the same
// ETag from it.
type cachedResults struct {
	contract.ElectionResults
	ElectionUpdatedAt time.Time            `json:"electionUpdatedAt"`
	CountsUpdatedAt   map[string]time.Time `json:"countsUpdatedAt,omitempty"`
}

func encodeCached(s *snapshot) ([]byte, error) {
	c := cachedResults{ElectionResults: buildResults(s.counts, true, s.observed), ElectionUpdatedAt: s.counts.UpdatedAt,
		CountsUpdatedAt: map[string]time.Time{}}
	for _, cand := range s.counts.Candidates {
		if !cand.UpdatedAt.IsZero() {
			c.CountsUpdatedAt[cand.ID] = cand.UpdatedAt
		}
	}
	return json.Marshal(c)
}

func decodeCached(b []byte) (ElectionCounts, error) {
	var c cachedResults
	if err := json.Unmarshal(b, &c); err != nil {
		return ElectionCounts{}, err
	}
	ec := ElectionCounts{ElectionID: c.ElectionID, Title: c.ElectionTitle, Status: c.Status, UpdatedAt: c.ElectionUpdatedAt.UTC()}
	for _, t := range c.Totals {
		ec.Candidates = append(ec.Candidates, CandidateCount{ID: t.CandidateID, Name: t.Name, Party: t.Party, Votes: t.Votes,
			UpdatedAt: c.CountsUpdatedAt[t.CandidateID].UTC()})
	}
	return ec, nil
}

// redisCache publishes snapshots to Redis from one goroutine, coalescing: only the newest
// snapshot of each election is written, so a slow Redis costs writes, never refresh latency.
type redisCache struct {
	rdb     *redis.Client
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	pending map[string]*snapshot
	wake    chan struct{}
}

func newRedisCache(rdb *redis.Client, log *slog.Logger, m *metrics) *redisCache {
	return &redisCache{rdb: rdb, log: log, metrics: m, pending: map[string]*snapshot{}, wake: make(chan struct{}, 1)}
}

func (c *redisCache) put(s *snapshot) {
	c.mu.Lock()
	c.pending[s.counts.ElectionID] = s
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run writes pending snapshots until ctx ends.
func (c *redisCache) run(ctx context.Context) {
	var lastErr time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch := c.pending
		c.pending = map[string]*snapshot{}
		c.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, redisTimeout)
		pipe := c.rdb.Pipeline()
		for id, s := range batch {
			// The key holds the contract's ElectionResults, which exist only while the results
			// endpoint serves them: an election that turns cancelled loses its copy.
			if resultsRefusal(s.counts.Status) != "" {
				pipe.Del(wctx, ResultsKey(id))
				continue
			}
			b, err := encodeCached(s)
			if err != nil {
				continue
			}
			pipe.Set(wctx, ResultsKey(id), b, redisTTL)
		}
		_, err := pipe.Exec(wctx)
		cancel()
		if err != nil {
			c.metrics.redisWrites.WithLabelValues("error").Add(float64(len(batch)))
			if time.Since(lastErr) > 10*time.Second { // one line per 10 s, not one per change
				c.log.Warn("redis write failed", "err", err)
				lastErr = time.Now()
			}
			continue
		}
		c.metrics.redisWrites.WithLabelValues("ok").Add(float64(len(batch)))
	}
}

// get reads an election's copy; ok=false on a miss or any error.
func (c *redisCache) get(ctx context.Context, id string) (ElectionCounts, bool) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	b, err := c.rdb.Get(ctx, ResultsKey(id)).Bytes()
	switch {
	case err == redis.Nil:
		c.metrics.cacheLookups.WithLabelValues("redis", "miss").Inc()
		return ElectionCounts{}, false
	case err != nil:
		c.metrics.cacheLookups.WithLabelValues("redis", "error").Inc()
		return ElectionCounts{}, false
	}
	ec, err := decodeCached(b)
	if err != nil || ec.ElectionID != id {
		c.metrics.cacheLookups.WithLabelValues("redis", "error").Inc()
		return ElectionCounts{}, false
	}
	c.metrics.cacheLookups.WithLabelValues("redis", "hit").Inc()
	return ec, true
}
