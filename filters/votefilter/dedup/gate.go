// Package dedup is the edge's shared admission store in Redis: one-vote-per-viewer keys,
// per-viewer and per-IP rate limits and proof-of-work replay protection.
package dedup

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key is the dedup key of a viewer in an election. The hash tag keeps a viewer's keys in
// one Redis Cluster slot.
func Key(electionID, viewerID string) string {
	return "vote:{" + electionID + ":" + viewerID + "}"
}

// Limit is a fixed-window rate limit; Max 0 disables it.
type Limit struct {
	Max    int
	Window time.Duration
}

// Attempt is one vote's claim on the store.
type Attempt struct {
	ElectionID string
	ViewerID   string
	ClientIP   string
	// Value is what the dedup key will hold: "<voteId>|<acceptedAt RFC3339Nano>".
	Value string
	// PoWID, if set, is a proof-of-work challenge id that must not have been used before.
	PoWID     string
	PoWExpiry time.Time
	PerViewer Limit
	PerIP     Limit
}

// Verdict of an Attempt.
type Verdict int

const (
	Reserved      Verdict = iota // the dedup key is ours: go on and enqueue
	ViewerLimited                // too many attempts by this viewer
	IPLimited                    // too many attempts from this address
	Duplicate                    // the viewer has voted in this election already
	Replayed                     // the proof-of-work challenge was used before
)

// Outcome is the store's answer.
type Outcome struct {
	Verdict Verdict
	// RetryAfter is set for the two limited verdicts.
	RetryAfter time.Duration
	// Existing is the dedup value already stored, for Duplicate.
	Existing string
}

// AcceptedKey counts the votes of an election that the edge reserved and did not release:
// acknowledged votes plus those in flight. The processor compares it with what it persisted.
func AcceptedKey(electionID string) string { return "votes:accepted:{" + electionID + "}" }

// gateScript does rate limits, replay protection and the one-vote SET NX in one round trip.
// Attempts count against the limits whatever their outcome, so hammering never gets cheaper.
//
// KEYS: 1 dedup, 2 viewer window, 3 ip window, 4 pow replay (or ""), 5 accepted counter
// ARGV: 1 value, 2 dedup ttl s, 3 viewer max, 4 viewer window ms, 5 ip max, 6 ip window ms,
//
//	7 pow ttl ms
//
// Keys of different viewers land in different Redis Cluster slots: this store expects a
// non-clustered primary per region (ElastiCache with replicas), which is far above the
// required rate.
var gateScript = redis.NewScript(`
local function over(key, max, window)
  if max <= 0 then return false end
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, window) end
  if n > max then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then redis.call('PEXPIRE', key, window); ttl = window end
    return ttl
  end
  return false
end
local t = over(KEYS[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
if t then return {2, t} end
t = over(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if t then return {1, t} end
local existing = redis.call('GET', KEYS[1])
if existing then return {3, existing} end
if KEYS[4] ~= '' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[7]) then return {4, ''} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('INCR', KEYS[5])
return {0, ''}
`)

// gateReleaseScript undoes a reservation whose vote could not be queued, only if the key
// still holds our value, so a slow failing request can never erase a later successful vote's
// key. The captcha record goes too: the viewer's retry of the same body must not be refused
// as a replay of a captcha that bought nothing.
var gateReleaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DECR', KEYS[2])
  if KEYS[3] ~= '' then redis.call('DEL', KEYS[3]) end
  return 1
end
return 0`)

// Gate is the admission store on one Redis primary.
type Gate struct {
	client *redis.Client
	ttl    time.Duration
}

// NewGate wraps a client; dedup keys live for ttl, which must outlast any election.
func NewGate(client *redis.Client, ttl time.Duration) *Gate { return &Gate{client: client, ttl: ttl} }

// Admit runs the gate script (EVALSHA, falling back to EVAL once per server).
func (g *Gate) Admit(ctx context.Context, a Attempt) (Outcome, error) {
	powKey, powTTL := "", int64(0)
	if a.PoWID != "" {
		powKey = "pow:" + a.PoWID
		// Expiry has whole-second precision and the checker accepts the whole last second,
		// so the record outlives it by a margin: a replay must never find it gone.
		powTTL = max(time.Until(a.PoWExpiry).Milliseconds(), 0) + 2000
	}
	keys := []string{Key(a.ElectionID, a.ViewerID), "rl:v:{" + a.ViewerID + "}", "rl:ip:{" + a.ClientIP + "}", powKey,
		AcceptedKey(a.ElectionID)}
	res, err := gateScript.Run(ctx, g.client, keys, a.Value, int64(g.ttl/time.Second),
		a.PerViewer.Max, a.PerViewer.Window.Milliseconds(), a.PerIP.Max, a.PerIP.Window.Milliseconds(), powTTL).Slice()
	if err != nil {
		return Outcome{}, err
	}
	if len(res) != 2 {
		return Outcome{}, fmt.Errorf("gate script: unexpected answer %v", res)
	}
	code, _ := res[0].(int64)
	switch Verdict(code) {
	case Reserved:
		return Outcome{Verdict: Reserved}, nil
	case ViewerLimited, IPLimited:
		ms, _ := res[1].(int64)
		return Outcome{Verdict: Verdict(code), RetryAfter: time.Duration(ms) * time.Millisecond}, nil
	case Duplicate:
		s, _ := res[1].(string)
		return Outcome{Verdict: Duplicate, Existing: s}, nil
	case Replayed:
		return Outcome{Verdict: Replayed}, nil
	}
	return Outcome{}, fmt.Errorf("gate script: unknown verdict %d", code)
}

// Release undoes a Reserved attempt whose vote could not be queued.
func (g *Gate) Release(ctx context.Context, a Attempt) error {
	powKey := ""
	if a.PoWID != "" {
		powKey = "pow:" + a.PoWID
	}
	return gateReleaseScript.Run(ctx, g.client, []string{Key(a.ElectionID, a.ViewerID), AcceptedKey(a.ElectionID), powKey},
		a.Value).Err()
}

// Lookup returns the dedup value of a viewer in an election, "" when there is none.
func (g *Gate) Lookup(ctx context.Context, electionID, viewerID string) (string, error) {
	v, err := g.client.Get(ctx, Key(electionID, viewerID)).Result()
	if err == redis.Nil {
		return "", nil
	}
	return v, err
}

// FormatValue builds the dedup value from a vote id and its acceptance time.
func FormatValue(voteID string, acceptedAt time.Time) string {
	return voteID + "|" + acceptedAt.UTC().Format(time.RFC3339Nano)
}

// ParseValue splits a dedup value.
func ParseValue(v string) (voteID string, acceptedAt time.Time, err error) {
	for i := 0; i < len(v); i++ {
		if v[i] == '|' {
			t, err := time.Parse(time.RFC3339Nano, v[i+1:])
			return v[:i], t, err
		}
	}
	return "", time.Time{}, fmt.Errorf("dedup value %q has no acceptance time", strconv.Quote(v))
}
