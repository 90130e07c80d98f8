// Package dedup keeps the edge's one-vote-per-viewer keys in Redis.
package dedup

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the dedup store on a Redis server.
type Redis struct {
	client *redis.Client
	ttl    time.Duration
}

// NewRedis wraps a client; keys live for ttl, which must outlast any election.
func NewRedis(client *redis.Client, ttl time.Duration) *Redis {
	return &Redis{client: client, ttl: ttl}
}

// Key is the dedup key of a viewer in an election. The hash tag keeps both parts of a
// viewer's state in one Redis Cluster slot.
func Key(electionID, viewerID string) string {
	return "vote:{" + electionID + ":" + viewerID + "}"
}

// Reserve is SET NX: true when this call created the key.
func (r *Redis) Reserve(ctx context.Context, electionID, viewerID, value string) (bool, error) {
	return r.client.SetNX(ctx, Key(electionID, viewerID), value, r.ttl).Result()
}

// releaseScript deletes the key only if it still holds our value, so a slow failing request
// can never erase a later successful vote's key.
var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// Release undoes a Reserve whose vote could not be queued.
func (r *Redis) Release(ctx context.Context, electionID, viewerID, value string) error {
	return releaseScript.Run(ctx, r.client, []string{Key(electionID, viewerID)}, value).Err()
}
