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
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
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
	// WaitReplicas, when > 0, makes Confirm wait (Redis WAIT) until that many replicas hold
	// the final entry before the vote is answered 200, so a failover to a replica cannot forget
	// a confirmed viewer; WaitTimeout bounds the wait (default 100 ms).
	WaitReplicas int
	WaitTimeout  time.Duration
}

// Gate is the admission store: one Redis primary, or a Redis Cluster.
type Gate struct {
	conn func() (rueidis.Client, error)
	opts Options
	// OnUnreplicated, if set, is told about every confirmation that fewer replicas than
	// WaitReplicas acknowledged in time (for metrics).
	OnUnreplicated func()
}

// NewGate wraps a client.
func NewGate(client rueidis.Client, o Options) *Gate {
	return NewGateDialing(func() (rueidis.Client, error) { return client, nil }, o)
}

// NewGateDialing builds a gate whose client comes from conn, asked for it on every call: a
// cluster client cannot be made while no node answers, and a config that arrives during an
// outage must still build.
func NewGateDialing(conn func() (rueidis.Client, error), o Options) *Gate {
	if o.DedupTTL <= 0 {
		o.DedupTTL = 7 * 24 * time.Hour
	}
	if o.PendingTTL <= 0 {
		o.PendingTTL = 30 * time.Second
	}
	if o.AdoptAfter <= 0 {
		o.AdoptAfter = 500 * time.Millisecond
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 100 * time.Millisecond
	}
	return &Gate{conn: conn, opts: o}
}

// reserveScript claims the viewer's vote in one round trip, on the viewer's slot: the viewer's
// rate limit, then the vote entry. Attempts count against the limit whatever their outcome, so
// hammering never gets cheaper; a recheck (ARGV[11] = 0) skips the limit, it is the same attempt
// asking again. It is idempotent: the same attempt asking twice gets Reserved twice, so a
// repeated call (a client retry after a timeout) can never make a viewer its own duplicate.
//
// KEYS: 1 dedup, 2 viewer window
// ARGV: 1 vote id, 2 accepted at, 3 candidate, 4 owner, 5 budget ms, 6 pending ttl ms,
//
//	7 viewer max, 8 viewer window ms, 9 adopt-after ms, 10 (unused), 11 count the limit (1/0)
//
// Answers {verdict, detail}: detail is the retry-after in ms for 1 and 5, the final value for
// 3, "<voteId>|<acceptedAt>" for 6.
var reserveScript = rueidis.NewLuaScript(reserveLua)

const limitLua = `
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
`

const reserveLua = limitLua + `
if ARGV[11] == '1' then
  local t = over(KEYS[2], tonumber(ARGV[7]), tonumber(ARGV[8]))
  if t then return {1, t} end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function hold(id, at, cand)
  local deadline = string.format('%d', now + tonumber(ARGV[5]))
  redis.call('SET', KEYS[1], '~' .. id .. '|' .. at .. '|' .. cand .. '|' .. deadline .. '|' .. ARGV[4], 'PX', ARGV[6])
end
local cur = redis.call('GET', KEYS[1])
if not cur then
  hold(ARGV[1], ARGV[2], ARGV[3])
  return {0, ''}
end
if string.sub(cur, 1, 1) ~= '~' then return {3, cur} end
local id, at, cand, deadline, owner = string.match(cur, '^~([^|]*)|([^|]*)|([^|]*)|(%d+)|(.*)$')
if not id then return redis.error_reply('dedup: unreadable pending value') end
if id == ARGV[1] and owner == ARGV[4] then return {0, ''} end
local free = tonumber(deadline) + tonumber(ARGV[9])
if now < free then return {5, free - now} end
if cand ~= ARGV[3] then return {5, redis.call('PTTL', KEYS[1])} end
hold(id, at, cand)
return {6, id .. '|' .. at}
`

// ipLimitScript counts one attempt against the per-IP limit, in the address's own slot.
// KEYS: 1 ip window; ARGV: 1 max, 2 window ms. Answers the retry-after in ms, or 0.
var ipLimitScript = rueidis.NewLuaScript(limitLua + `
local t = over(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if t then return t end
return 0
`)

// Reserve claims the viewer's vote for a, counting the attempt against the rate limits.
func (g *Gate) Reserve(ctx context.Context, a Attempt) (Outcome, error) {
	return g.reserve(ctx, a, true)
}

// Recheck asks again for an attempt that was answered Busy, without counting it against
// the limits a second time.
func (g *Gate) Recheck(ctx context.Context, a Attempt) (Outcome, error) {
	return g.reserve(ctx, a, false)
}

// reserve runs the viewer's script, the per-IP limit and the proof-of-work replay record side
// by side — three slots of a cluster, one round trip of time — and then settles what the
// three answers mean together: a reservation made for an attempt that the address limit or a
// replayed challenge refuses is released again, and a challenge recorded for an attempt that
// is refused anyway is given back, so a refusal never burns it.
func (g *Gate) reserve(ctx context.Context, a Attempt, countLimits bool) (Outcome, error) {
	c, err := g.conn()
	if err != nil {
		return Outcome{}, err
	}
	limit := "0"
	if countLimits {
		limit = "1"
	}
	var (
		wg            sync.WaitGroup
		ipWait        int64
		ipErr, powErr error
		powFresh      bool
	)
	if countLimits && a.PerIP.Max > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ipWait, ipErr = ipLimitScript.Exec(ctx, c, []string{ipWindowKey(a.ClientIP)},
				[]string{itoa(a.PerIP.Max), ms(a.PerIP.Window())}).AsInt64()
		}()
	}
	if a.PoWID != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Expiry has whole-second precision and the checker accepts the whole last second,
			// so the record outlives it by a margin: a replay must never find it gone.
			ttl := max(time.Until(a.PoWExpiry).Milliseconds(), 0) + 2000
			err := c.Do(ctx, c.B().Set().Key(captcha.ReplayKey(a.PoWID)).Value("1").Nx().PxMilliseconds(ttl).Build()).Error()
			switch {
			case err == nil:
				powFresh = true
			case !rueidis.IsRedisNil(err):
				powErr = err
			}
		}()
	}
	res, err := reserveScript.Exec(ctx, c, []string{Key(a.ElectionID, a.ViewerID), viewerWindowKey(a.ElectionID, a.ViewerID)},
		[]string{a.VoteID, FormatTime(a.AcceptedAt), a.CandidateID, a.Owner, ms(a.Budget), ms(g.opts.PendingTTL),
			itoa(a.PerViewer.Max), ms(a.PerViewer.Window()), ms(g.opts.AdoptAfter), "", limit}).ToArray()
	wg.Wait()
	out, mainErr := outcomeOf(res, err)
	reserved := mainErr == nil && out.Verdict == Reserved
	refuse := func(o Outcome, err error) (Outcome, error) {
		if reserved {
			g.undo(ctx, c, a, powFresh)
		} else if powFresh {
			g.giveBack(ctx, c, a.PoWID)
		}
		return o, err
	}
	switch {
	case mainErr != nil:
		return refuse(Outcome{}, mainErr)
	case ipErr != nil || powErr != nil:
		return refuse(Outcome{}, errors.Join(ipErr, powErr))
	case ipWait > 0:
		return refuse(Outcome{Verdict: IPLimited, RetryAfter: time.Duration(ipWait) * time.Millisecond}, nil)
	case reserved && a.PoWID != "" && !powFresh:
		// The challenge was used before: the reservation made meanwhile goes again.
		g.undo(ctx, c, a, false)
		return Outcome{Verdict: Replayed}, nil
	case !reserved && out.Verdict != Adopted && powFresh:
		g.giveBack(ctx, c, a.PoWID)
	}
	// An adopted vote already passed a captcha; the app's retry carries that same token again,
	// recorded or not, so it is no replay.
	return out, nil
}

// outcomeOf reads the reserve script's answer.
func outcomeOf(res []rueidis.RedisMessage, err error) (Outcome, error) {
	if err != nil {
		return Outcome{}, err
	}
	code, detail, err := verdictOf(res)
	if err != nil {
		return Outcome{}, fmt.Errorf("reserve script: %w", err)
	}
	switch v := Verdict(code); v {
	case Reserved:
		return Outcome{Verdict: v}, nil
	case ViewerLimited, Busy:
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

// undo releases a reservation the attempt made but may not keep; best effort, as a pending
// entry expires by itself.
func (g *Gate) undo(ctx context.Context, c rueidis.Client, a Attempt, powFresh bool) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = releaseScript.Exec(rctx, c, []string{Key(a.ElectionID, a.ViewerID)}, []string{a.VoteID, a.Owner}).Error()
	if powFresh {
		g.giveBack(rctx, c, a.PoWID)
	}
}

// giveBack deletes a challenge's replay record that bought nothing.
func (g *Gate) giveBack(ctx context.Context, c rueidis.Client, powID string) {
	_ = c.Do(ctx, c.B().Del().Key(captcha.ReplayKey(powID)).Build()).Error()
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
// KEYS: 1 dedup, 2 the viewer's bucket of the accepted counter
// ARGV: 1 vote id, 2 final value, 3 dedup ttl s, 4 take over another vote's pending (1/0)
//
// Answers {0} newly final, {1} already final with this vote, {2, value} final with another
// vote, {3, value} pending with another vote (when not taken over).
var finalScript = rueidis.NewLuaScript(finalLua)

const finalLua = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then return {1, ''} end
if cur then
  if string.sub(cur, 1, 1) ~= '~' then return {2, cur} end
  if ARGV[4] ~= '1' and string.match(cur, '^~([^|]*)|') ~= ARGV[1] then return {3, cur} end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('INCR', KEYS[2])
return {0, ''}
`

var finalSHA = func() string { h := sha1.Sum([]byte(finalLua)); return hex.EncodeToString(h[:]) }()

// Confirm makes a's vote final after SQS acknowledged it. The pending value may have been
// adopted by a retry (same vote id, other owner) or have expired; both are still this vote.
func (g *Gate) Confirm(ctx context.Context, a Attempt) (Confirmation, error) {
	c, err := g.conn()
	if err != nil {
		return 0, err
	}
	keys := []string{Key(a.ElectionID, a.ViewerID), AcceptedKey(a.ElectionID, Bucket(a.ViewerID))}
	args := []string{a.VoteID, FormatValue(a.VoteID, a.AcceptedAt), sec(g.opts.DedupTTL), "0"}
	var res rueidis.RedisResult
	if g.opts.WaitReplicas <= 0 {
		res = finalScript.Exec(ctx, c, keys, args)
	} else if res, err = g.confirmReplicated(ctx, c, keys, args); err != nil {
		return 0, err
	}
	out, err := res.ToArray()
	if err != nil {
		return 0, err
	}
	code, _, err := verdictOf(out)
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

// confirmReplicated runs the final script and WAIT on one connection to the entry's primary:
// WAIT counts the replicas that have every write that connection sent before it.
func (g *Gate) confirmReplicated(ctx context.Context, c rueidis.Client, keys, args []string) (rueidis.RedisResult, error) {
	var res rueidis.RedisResult
	var acked int64
	err := c.Dedicated(func(dc rueidis.DedicatedClient) error {
		wait := func() rueidis.Completed {
			return dc.B().Wait().Numreplicas(int64(g.opts.WaitReplicas)).Timeout(g.opts.WaitTimeout.Milliseconds()).Build()
		}
		out := dc.DoMulti(ctx, dc.B().Evalsha().Sha1(finalSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(), wait())
		if e, ok := rueidis.IsRedisErr(out[0].Error()); ok && e.IsNoScript() {
			out = dc.DoMulti(ctx, dc.B().Eval().Script(finalLua).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(), wait())
		}
		res = out[0]
		var err error
		acked, err = out[1].AsInt64()
		return err
	})
	if err == nil && acked < int64(g.opts.WaitReplicas) && g.OnUnreplicated != nil {
		// The entry is final on the primary and the vote is queued: it is answered all the
		// same, and the shortfall is counted.
		g.OnUnreplicated()
	}
	return res, err
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
    return 1
  end
end
return 0`)

// Release undoes a reservation whose vote is certainly not in the queue. Its captcha record
// goes too (in its own slot, after the reservation): the viewer's retry of the same body must
// not be refused as a replay of a captcha that bought nothing.
func (g *Gate) Release(ctx context.Context, a Attempt) error {
	c, err := g.conn()
	if err != nil {
		return err
	}
	released, err := releaseScript.Exec(ctx, c, []string{Key(a.ElectionID, a.ViewerID)}, []string{a.VoteID, a.Owner}).AsInt64()
	if err != nil || released == 0 || a.PoWID == "" {
		return err
	}
	return c.Do(ctx, c.B().Del().Key(captcha.ReplayKey(a.PoWID)).Build()).Error()
}

// Lookup reads a viewer's dedup entry.
func (g *Gate) Lookup(ctx context.Context, electionID, viewerID string) (Entry, error) {
	c, err := g.conn()
	if err != nil {
		return Entry{}, err
	}
	v, err := c.Do(ctx, c.B().Get().Key(Key(electionID, viewerID)).Build()).ToString()
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
