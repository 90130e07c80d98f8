// Package dedup is the edge's shared admission store in Redis: one-vote-per-viewer keys,
// per-viewer and per-IP rate limits and proof-of-work replay protection.
//
// A viewer's vote goes through the store twice. Reserve holds the viewer with a short-lived
// pending value before the vote is sent to SQS; Confirm turns it final once SQS acknowledged
// the vote. Only a final value answers later attempts with "already voted", so a crash or a
// failed send between the two never locks a viewer out beyond the pending TTL (see entry.go).
// The processor writes the same final value once PostgreSQL stored the vote (Record), which
// settles the votes whose edge died between SQS's acknowledgement and Confirm.
package dedup

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// Attempt is one request's claim on a viewer's vote.
type Attempt struct {
	ElectionID  string
	ViewerID    string
	ClientIP    string
	VoteID      string
	AcceptedAt  time.Time
	CandidateID string
	// Owner tells this attempt apart from other attempts at the same vote (a retry that
	// adopted it), so a late release never drops a reservation somebody else now holds.
	Owner string
	// Budget is how long the attempt may take to get its vote acknowledged; the pending
	// value carries Redis's clock plus Budget as the owner's deadline.
	Budget time.Duration
	// PoWID, if set, is a proof-of-work challenge id that must not have been used before.
	PoWID     string
	PoWExpiry time.Time
	PerViewer edgeconfig.Limit
	PerIP     edgeconfig.Limit
}

// Verdict of a reservation.
type Verdict int

const (
	Reserved      Verdict = iota // the viewer is ours: enqueue, then Confirm
	ViewerLimited                // too many attempts by this viewer
	IPLimited                    // too many attempts from this address
	Duplicate                    // the viewer's vote is queued or stored
	Replayed                     // the proof-of-work challenge was used before
	Busy                         // another attempt holds the viewer; its outcome is not known yet
	Adopted                      // an abandoned attempt at the same vote is ours now: send it under its id
)

// Outcome is the store's answer to Reserve.
type Outcome struct {
	Verdict Verdict
	// RetryAfter is set for the limited verdicts, and for Busy: when the answer may change.
	RetryAfter time.Duration
	// Existing is the final value already stored, for Duplicate.
	Existing string
	// VoteID and AcceptedAt identify the adopted vote, for Adopted.
	VoteID     string
	AcceptedAt time.Time
}

// Options tune a Gate.
type Options struct {
	// DedupTTL is how long a final key lives; it must outlast any election.
	DedupTTL time.Duration
	// PendingTTL is how long a pending key lives: the longest a viewer can be held by an
	// attempt whose outcome nobody learned (default 30 s). It must exceed any Budget.
	PendingTTL time.Duration
	// AdoptAfter is the grace after an owner's deadline before a retry may adopt its vote
	// (default 500 ms): the owner's last send may still be on the wire.
	AdoptAfter time.Duration
}

// Gate is the admission store on one Redis primary.
type Gate struct {
	client rueidis.Client
	opts   Options
}

// NewGate wraps a client.
func NewGate(client rueidis.Client, o Options) *Gate {
	if o.DedupTTL <= 0 {
		o.DedupTTL = 7 * 24 * time.Hour
	}
	if o.PendingTTL <= 0 {
		o.PendingTTL = 30 * time.Second
	}
	if o.AdoptAfter <= 0 {
		o.AdoptAfter = 500 * time.Millisecond
	}
	return &Gate{client: client, opts: o}
}

// reserveScript does rate limits, the viewer's vote key and replay protection in one round
// trip. Attempts count against the limits whatever their outcome, so hammering never gets
// cheaper; a recheck (ARGV[13] = 0) skips the limits, it is the same attempt asking again.
// It is idempotent: the same attempt asking twice gets Reserved twice, so a repeated call
// (a client retry after a timeout) can never make a viewer its own duplicate. Adopting skips
// the replay check (the captcha is recorded all the same): the vote already passed a captcha,
// and the app's retry carries that same token again.
//
// KEYS: 1 dedup, 2 viewer window, 3 ip window, 4 pow replay (or "")
// ARGV: 1 vote id, 2 accepted at, 3 candidate, 4 owner, 5 budget ms, 6 pending ttl ms,
//
//	7 viewer max, 8 viewer window ms, 9 ip max, 10 ip window ms, 11 pow ttl ms,
//	12 adopt-after ms, 13 count limits (1/0)
//
// Answers {verdict, detail}: detail is the retry-after in ms for 1, 2 and 5, the final value
// for 3, "<voteId>|<acceptedAt>" for 6.
var reserveScript = rueidis.NewLuaScript(reserveLua)

const reserveLua = `
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
if ARGV[13] == '1' then
  local t = over(KEYS[3], tonumber(ARGV[9]), tonumber(ARGV[10]))
  if t then return {2, t} end
  t = over(KEYS[2], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if t then return {1, t} end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function hold(id, at, cand, adopting)
  if KEYS[4] ~= '' then
    if adopting then
      redis.call('SET', KEYS[4], '1', 'PX', ARGV[11])
    elseif not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[11]) then
      return false
    end
  end
  local deadline = string.format('%d', now + tonumber(ARGV[5]))
  redis.call('SET', KEYS[1], '~' .. id .. '|' .. at .. '|' .. cand .. '|' .. deadline .. '|' .. ARGV[4], 'PX', ARGV[6])
  return true
end
local cur = redis.call('GET', KEYS[1])
if not cur then
  if not hold(ARGV[1], ARGV[2], ARGV[3], false) then return {4, ''} end
  return {0, ''}
end
if string.sub(cur, 1, 1) ~= '~' then return {3, cur} end
local id, at, cand, deadline, owner = string.match(cur, '^~([^|]*)|([^|]*)|([^|]*)|(%d+)|(.*)$')
if not id then return redis.error_reply('dedup: unreadable pending value') end
if id == ARGV[1] and owner == ARGV[4] then return {0, ''} end
local free = tonumber(deadline) + tonumber(ARGV[12])
if now < free then return {5, free - now} end
if cand ~= ARGV[3] then return {5, redis.call('PTTL', KEYS[1])} end
hold(id, at, cand, true)
return {6, id .. '|' .. at}
`

// Reserve claims the viewer's vote for a, counting the attempt against the rate limits.
func (g *Gate) Reserve(ctx context.Context, a Attempt) (Outcome, error) {
	return g.reserve(ctx, a, true)
}

// Recheck asks again for an attempt that was answered Busy, without counting it against
// the limits a second time.
func (g *Gate) Recheck(ctx context.Context, a Attempt) (Outcome, error) {
	return g.reserve(ctx, a, false)
}

func (g *Gate) reserve(ctx context.Context, a Attempt, countLimits bool) (Outcome, error) {
	powKey, powTTL := "", int64(0)
	if a.PoWID != "" {
		powKey = captcha.ReplayKey(a.PoWID)
		// Expiry has whole-second precision and the checker accepts the whole last second,
		// so the record outlives it by a margin: a replay must never find it gone.
		powTTL = max(time.Until(a.PoWExpiry).Milliseconds(), 0) + 2000
	}
	limits := "0"
	if countLimits {
		limits = "1"
	}
	keys := []string{Key(a.ElectionID, a.ViewerID), "rl:v:{" + a.ViewerID + "}", "rl:ip:{" + a.ClientIP + "}", powKey}
	args := []string{a.VoteID, FormatTime(a.AcceptedAt), a.CandidateID, a.Owner, ms(a.Budget), ms(g.opts.PendingTTL),
		itoa(a.PerViewer.Max), ms(a.PerViewer.Window()), itoa(a.PerIP.Max), ms(a.PerIP.Window()), itoa64(powTTL),
		ms(g.opts.AdoptAfter), limits}
	res, err := reserveScript.Exec(ctx, g.client, keys, args).ToArray()
	if err != nil {
		return Outcome{}, err
	}
	code, detail, err := verdictOf(res)
	if err != nil {
		return Outcome{}, fmt.Errorf("reserve script: %w", err)
	}
	switch v := Verdict(code); v {
	case Reserved, Replayed:
		return Outcome{Verdict: v}, nil
	case ViewerLimited, IPLimited, Busy:
		n, _ := strconv.ParseInt(detail, 10, 64)
		return Outcome{Verdict: v, RetryAfter: time.Duration(max(n, 0)) * time.Millisecond}, nil
	case Duplicate:
		return Outcome{Verdict: Duplicate, Existing: detail}, nil
	case Adopted:
		id, at, err := ParseValue(detail)
		if err != nil {
			return Outcome{}, fmt.Errorf("reserve script: adopted vote: %w", err)
		}
		return Outcome{Verdict: Adopted, VoteID: id, AcceptedAt: at}, nil
	}
	return Outcome{}, fmt.Errorf("reserve script: unknown verdict %d", code)
}

// Confirmation is what Confirm found.
type Confirmation int

const (
	// Confirmed: the key holds this vote as final (now, or already).
	Confirmed Confirmation = iota
	// Superseded: another vote of the viewer is final; this one will not be counted.
	Superseded
	// Contended: another attempt with another vote id holds the viewer.
	Contended
)

// finalScript turns a viewer's key final with the given vote and counts it, once.
//
// KEYS: 1 dedup, 2 accepted counter
// ARGV: 1 vote id, 2 final value, 3 dedup ttl s, 4 take over another vote's pending (1/0)
//
// Answers {0} newly final, {1} already final with this vote, {2, value} final with another
// vote, {3, value} pending with another vote (when not taken over).
var finalScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then return {1, ''} end
if cur then
  if string.sub(cur, 1, 1) ~= '~' then return {2, cur} end
  if ARGV[4] ~= '1' and string.match(cur, '^~([^|]*)|') ~= ARGV[1] then return {3, cur} end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('INCR', KEYS[2])
return {0, ''}
`)

// Confirm makes a's vote final after SQS acknowledged it. The pending value may have been
// adopted by a retry (same vote id, other owner) or have expired; both are still this vote.
func (g *Gate) Confirm(ctx context.Context, a Attempt) (Confirmation, error) {
	res, err := finalScript.Exec(ctx, g.client, []string{Key(a.ElectionID, a.ViewerID), AcceptedKey(a.ElectionID)},
		[]string{a.VoteID, FormatValue(a.VoteID, a.AcceptedAt), sec(g.opts.DedupTTL), "0"}).ToArray()
	if err != nil {
		return 0, err
	}
	code, _, err := verdictOf(res)
	if err != nil {
		return 0, fmt.Errorf("final script: %w", err)
	}
	switch code {
	case 0, 1:
		return Confirmed, nil
	case 2:
		return Superseded, nil
	case 3:
		return Contended, nil
	}
	return 0, fmt.Errorf("final script: unknown answer %d", code)
}

// releaseScript drops a pending reservation only while this very attempt holds it, so a late
// release can neither erase a final vote nor a retry's adopted reservation. The captcha record
// goes too: the viewer's retry of the same body must not be refused as a replay of a captcha
// that bought nothing.
//
// KEYS: 1 dedup, 2 pow replay (or ""); ARGV: 1 vote id, 2 owner
var releaseScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local id, owner = string.match(cur, '^~([^|]*)|[^|]*|[^|]*|%d+|(.*)$')
  if id == ARGV[1] and owner == ARGV[2] then
    redis.call('DEL', KEYS[1])
    if KEYS[2] ~= '' then redis.call('DEL', KEYS[2]) end
    return 1
  end
end
return 0`)

// Release undoes a reservation whose vote is certainly not in the queue.
func (g *Gate) Release(ctx context.Context, a Attempt) error {
	powKey := ""
	if a.PoWID != "" {
		powKey = captcha.ReplayKey(a.PoWID)
	}
	return releaseScript.Exec(ctx, g.client, []string{Key(a.ElectionID, a.ViewerID), powKey},
		[]string{a.VoteID, a.Owner}).Error()
}

// Lookup reads a viewer's dedup entry.
func (g *Gate) Lookup(ctx context.Context, electionID, viewerID string) (Entry, error) {
	v, err := g.client.Do(ctx, g.client.B().Get().Key(Key(electionID, viewerID)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return Entry{}, nil
	}
	if err != nil {
		return Entry{}, err
	}
	return ParseEntry(v)
}

func verdictOf(res []rueidis.RedisMessage) (int64, string, error) {
	if len(res) == 0 {
		return 0, "", fmt.Errorf("empty answer")
	}
	code, err := res[0].AsInt64()
	if err != nil {
		return 0, "", err
	}
	detail := ""
	if len(res) > 1 {
		if n, err := res[1].AsInt64(); err == nil {
			detail = strconv.FormatInt(n, 10)
		} else if s, err := res[1].ToString(); err == nil {
			detail = s
		}
	}
	return code, detail, nil
}

func ms(d time.Duration) string  { return strconv.FormatInt(d.Milliseconds(), 10) }
func sec(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }
func itoa(n int) string          { return strconv.Itoa(n) }
func itoa64(n int64) string      { return strconv.FormatInt(n, 10) }
