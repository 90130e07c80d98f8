// Package dedupfake is an in-memory stand-in for dedup.Gate with the same rules, for tests of
// the admission logic and the Envoy adapter that need no Redis. The rules themselves are
// tested against Redis in package dedup; this fake follows them in the scripts' order: the
// per-IP limit, the per-viewer limit (fixed windows, every attempt counts), then the viewer's
// entry (final → Duplicate; pending → the same attempt, Busy, or adoption; none → replay check
// and reservation). It records every call and lets a test inject failures.
package dedupfake

import (
	"context"
	"sync"
	"time"

	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// Gate is the fake store. The zero value is not usable: use New.
type Gate struct {
	mu sync.Mutex
	// clock is the store's clock (windows, deadlines, expiry); tests move it with Advance.
	clock time.Time
	opts  dedup.Options

	entries  map[string]*entry
	windows  map[string]*window
	pow      map[string]bool
	accepted map[string]int

	// Injected failures.
	ReserveErr, ConfirmErr, ReleaseErr, LookupErr error

	// Recorded calls.
	Reserves  []dedup.Attempt // Reserve calls, not rechecks
	Rechecks  int
	Confirms  []dedup.Attempt
	Releases  []dedup.Attempt
	Lookups   []string // "election|viewer"
	ReserveDL bool     // the last Reserve's context had a deadline
	// ReleaseCtxErr is ctx.Err() as the last Release saw it.
	ReleaseCtxErr error
}

type entry struct {
	final       bool
	voteID      string
	acceptedAt  time.Time
	candidateID string
	owner       string
	deadline    time.Time
	expires     time.Time
}

type window struct {
	n   int
	end time.Time
}

// New returns an empty store whose clock starts at now.
func New(now time.Time, o dedup.Options) *Gate {
	if o.DedupTTL <= 0 {
		o.DedupTTL = 7 * 24 * time.Hour
	}
	if o.PendingTTL <= 0 {
		o.PendingTTL = 30 * time.Second
	}
	if o.AdoptAfter <= 0 {
		o.AdoptAfter = 500 * time.Millisecond
	}
	return &Gate{clock: now, opts: o, entries: map[string]*entry{}, windows: map[string]*window{},
		pow: map[string]bool{}, accepted: map[string]int{}}
}

// Advance moves the store's clock.
func (g *Gate) Advance(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.clock = g.clock.Add(d)
}

func key(electionID, viewerID string) string { return electionID + "|" + viewerID }

// get returns the live entry of a viewer, dropping an expired one.
func (g *Gate) get(k string) *entry {
	e := g.entries[k]
	if e != nil && !g.clock.Before(e.expires) {
		delete(g.entries, k)
		return nil
	}
	return e
}

func (g *Gate) over(k string, l edgeconfig.Limit) (time.Duration, bool) {
	if l.Max <= 0 {
		return 0, false
	}
	w := g.windows[k]
	if w == nil || !g.clock.Before(w.end) {
		w = &window{end: g.clock.Add(l.Window())}
		g.windows[k] = w
	}
	w.n++
	if w.n > l.Max {
		return w.end.Sub(g.clock), true
	}
	return 0, false
}

// Reserve follows dedup.Gate.Reserve.
func (g *Gate) Reserve(ctx context.Context, a dedup.Attempt) (dedup.Outcome, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Reserves = append(g.Reserves, a)
	_, g.ReserveDL = ctx.Deadline()
	if g.ReserveErr != nil {
		return dedup.Outcome{}, g.ReserveErr
	}
	if d, limited := g.over("ip:"+a.ClientIP, a.PerIP); limited {
		return dedup.Outcome{Verdict: dedup.IPLimited, RetryAfter: d}, nil
	}
	if d, limited := g.over("v:"+a.ViewerID, a.PerViewer); limited {
		return dedup.Outcome{Verdict: dedup.ViewerLimited, RetryAfter: d}, nil
	}
	return g.decide(a), nil
}

// Recheck follows dedup.Gate.Recheck: no limits counted.
func (g *Gate) Recheck(ctx context.Context, a dedup.Attempt) (dedup.Outcome, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Rechecks++
	if g.ReserveErr != nil {
		return dedup.Outcome{}, g.ReserveErr
	}
	return g.decide(a), nil
}

func (g *Gate) decide(a dedup.Attempt) dedup.Outcome {
	k := key(a.ElectionID, a.ViewerID)
	e := g.get(k)
	hold := func(voteID string, at time.Time, adopting bool) bool {
		if a.PoWID != "" {
			if g.pow[a.PoWID] && !adopting {
				return false
			}
			g.pow[a.PoWID] = true
		}
		g.entries[k] = &entry{voteID: voteID, acceptedAt: at, candidateID: a.CandidateID, owner: a.Owner,
			deadline: g.clock.Add(a.Budget), expires: g.clock.Add(g.opts.PendingTTL)}
		return true
	}
	switch {
	case e == nil:
		if !hold(a.VoteID, a.AcceptedAt, false) {
			return dedup.Outcome{Verdict: dedup.Replayed}
		}
		return dedup.Outcome{Verdict: dedup.Reserved}
	case e.final:
		return dedup.Outcome{Verdict: dedup.Duplicate, Existing: dedup.FormatValue(e.voteID, e.acceptedAt)}
	case e.voteID == a.VoteID && e.owner == a.Owner:
		return dedup.Outcome{Verdict: dedup.Reserved}
	}
	if free := e.deadline.Add(g.opts.AdoptAfter); g.clock.Before(free) {
		return dedup.Outcome{Verdict: dedup.Busy, RetryAfter: free.Sub(g.clock)}
	}
	if e.candidateID != a.CandidateID {
		return dedup.Outcome{Verdict: dedup.Busy, RetryAfter: e.expires.Sub(g.clock)}
	}
	id, at := e.voteID, e.acceptedAt
	hold(id, at, true)
	return dedup.Outcome{Verdict: dedup.Adopted, VoteID: id, AcceptedAt: at}
}

// Confirm follows dedup.Gate.Confirm.
func (g *Gate) Confirm(_ context.Context, a dedup.Attempt) (dedup.Confirmation, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Confirms = append(g.Confirms, a)
	if g.ConfirmErr != nil {
		return 0, g.ConfirmErr
	}
	k := key(a.ElectionID, a.ViewerID)
	e := g.get(k)
	switch {
	case e != nil && e.final && e.voteID == a.VoteID:
		return dedup.Confirmed, nil
	case e != nil && e.final:
		return dedup.Superseded, nil
	case e != nil && e.voteID != a.VoteID:
		return dedup.Contended, nil
	}
	g.finalize(k, a.ElectionID, a.VoteID, a.AcceptedAt)
	return dedup.Confirmed, nil
}

func (g *Gate) finalize(k, electionID, voteID string, at time.Time) {
	g.entries[k] = &entry{final: true, voteID: voteID, acceptedAt: at, expires: g.clock.Add(g.opts.DedupTTL)}
	g.accepted[electionID]++
}

// Release follows dedup.Gate.Release.
func (g *Gate) Release(ctx context.Context, a dedup.Attempt) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Releases = append(g.Releases, a)
	g.ReleaseCtxErr = ctx.Err()
	if g.ReleaseErr != nil {
		return g.ReleaseErr
	}
	k := key(a.ElectionID, a.ViewerID)
	if e := g.get(k); e != nil && !e.final && e.voteID == a.VoteID && e.owner == a.Owner {
		delete(g.entries, k)
		if a.PoWID != "" {
			delete(g.pow, a.PoWID)
		}
	}
	return nil
}

// Lookup follows dedup.Gate.Lookup.
func (g *Gate) Lookup(_ context.Context, electionID, viewerID string) (dedup.Entry, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Lookups = append(g.Lookups, key(electionID, viewerID))
	if g.LookupErr != nil {
		return dedup.Entry{}, g.LookupErr
	}
	return g.view(key(electionID, viewerID)), nil
}

func (g *Gate) view(k string) dedup.Entry {
	e := g.get(k)
	switch {
	case e == nil:
		return dedup.Entry{}
	case e.final:
		return dedup.Entry{State: dedup.Final, VoteID: e.voteID, AcceptedAt: e.acceptedAt}
	}
	return dedup.Entry{State: dedup.Pending, VoteID: e.voteID, AcceptedAt: e.acceptedAt, CandidateID: e.candidateID,
		Deadline: e.deadline, Owner: e.owner}
}

// SetFinal stores a final vote for a viewer, as an earlier accepted vote would have.
func (g *Gate) SetFinal(electionID, viewerID, voteID string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.finalize(key(electionID, viewerID), electionID, voteID, at)
}

// SetPending stores a pending reservation of another attempt.
func (g *Gate) SetPending(electionID, viewerID string, a dedup.Attempt) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.entries[key(electionID, viewerID)] = &entry{voteID: a.VoteID, acceptedAt: a.AcceptedAt, candidateID: a.CandidateID,
		owner: a.Owner, deadline: g.clock.Add(a.Budget), expires: g.clock.Add(g.opts.PendingTTL)}
}

// Entry is what the store holds for a viewer now.
func (g *Gate) Entry(electionID, viewerID string) dedup.Entry {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.view(key(electionID, viewerID))
}

// Accepted is the election's counter of final votes.
func (g *Gate) Accepted(electionID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.accepted[electionID]
}

// ReserveCalls returns a copy of the recorded Reserve calls.
func (g *Gate) ReserveCalls() []dedup.Attempt {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]dedup.Attempt(nil), g.Reserves...)
}
