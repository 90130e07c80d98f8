package results

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
)

// Limits of what the hub keeps in memory.
const (
	// maxTracked bounds the elections held in memory. Beyond it, requests are answered straight
	// from PostgreSQL: still correct, only slower, and ids sprayed by a scanner cannot grow
	// the map.
	maxTracked = 1000
	// idleEviction drops an election nobody asked for and nobody streams for this long.
	idleEviction = 5 * time.Minute
	// minRefreshGap spaces notification-driven re-reads (an election changed, a payload without
	// deltas): a burst of them lands in one query, and one per 50 ms per worker is plenty.
	// The processor's count deltas do not wait for it: they are applied as they arrive.
	minRefreshGap = 50 * time.Millisecond
)

// clock is the hub's time: the wall clock in production; tests substitute a fake one, so that
// the stream's cadence is checked without sleeping.
type clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) timer
}

// timer is the part of *time.Timer the broadcaster needs.
type timer interface{ Stop() bool }

type wallClock struct{}

func (wallClock) Now() time.Time                            { return time.Now() }
func (wallClock) AfterFunc(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

// countsSource is where the hub reads counts: PGStore in production, fakes in unit tests.
type countsSource interface {
	ElectionsCounts(ctx context.Context, electionIDs []string) (map[string]ElectionCounts, error)
	Ping(ctx context.Context) error
}

// snapshot is one immutable view of an election. Requests and stream messages read it through
// an atomic pointer; the processor's deltas and the re-reads replace it (Hub.advance).
//
// A candidate's UpdatedAt is vote_counts.updated_at once a read has seen its count; a count
// that arrived as a delta carries the notification's arrival time until the next read (at the
// latest the poll) replaces it with the stored one, so every replica converges on the same
// ETag and lastUpdated.
type snapshot struct {
	counts ElectionCounts
	total  int64
	// observed is when this worker learned of the change that produced the snapshot (the
	// notification's arrival, or the poll); stream lag is measured from it.
	observed time.Time
}

func newSnapshot(ec ElectionCounts, observed time.Time) *snapshot {
	s := &snapshot{counts: ec, observed: observed}
	for _, c := range ec.Candidates {
		s.total += c.Votes
	}
	return s
}

// sameAs reports whether nothing visible changed: status, title, the election's updated_at and
// every candidate's count and timestamp.
func (s *snapshot) sameAs(ec ElectionCounts) bool {
	a := s.counts
	return a.Status == ec.Status && a.Title == ec.Title && a.UpdatedAt.Equal(ec.UpdatedAt) &&
		slices.EqualFunc(a.Candidates, ec.Candidates, func(x, y CandidateCount) bool {
			return x.ID == y.ID && x.Votes == y.Votes && x.Name == y.Name && x.Party == y.Party && x.UpdatedAt.Equal(y.UpdatedAt)
		})
}

// newestCount is the newest vote_counts.updated_at, i.e. the start of the processor
// transaction that last changed a count.
func (s *snapshot) newestCount() time.Time {
	var t time.Time
	for _, c := range s.counts.Candidates {
		if c.UpdatedAt.After(t) {
			t = c.UpdatedAt
		}
	}
	return t
}

// entry is one tracked election.
type entry struct {
	id    string
	ready chan struct{} // closed once the first load finished (err tells how)
	err   error
	snap  atomic.Pointer[snapshot]
	used  atomic.Int64 // unix nanos of the last request
	bc    *broadcaster

	// write serialises snapshot changes after the first load: deltas come from the listener,
	// re-reads from the refresher.
	write sync.Mutex

	// notifiedWhileLoading (guarded by Hub.mu) remembers a notification that arrived during
	// the first load, whose result may predate that commit.
	notifiedWhileLoading bool
}

// Hub keeps the counts of the elections being asked for in memory, moved by the deltas of the
// processor's notifications (push, no query) and re-read from PostgreSQL as a safety net
// (every poll, after the listener reconnects, whenever a notification is not a delta), and
// feeds one broadcaster per election. It implements Store, so the HTTP handlers read it
// exactly like PostgreSQL.
type Hub struct {
	src     countsSource
	cache   *redisCache // nil without Redis
	log     *slog.Logger
	metrics *metrics
	clock   clock

	dbTimeout      time.Duration
	pollInterval   time.Duration
	streamInterval time.Duration
	heartbeat      time.Duration

	mu       sync.Mutex
	entries  map[string]*entry
	dirty    map[string]time.Time // election → when its first pending notification arrived
	allDirty time.Time            // non-zero: refresh every tracked election
	closed   bool
	wake     chan struct{}
}

// HubOptions configure NewHub; zero durations take the Default* values.
type HubOptions struct {
	DBTimeout         time.Duration
	PollInterval      time.Duration
	StreamInterval    time.Duration
	HeartbeatInterval time.Duration
}

func newHub(src countsSource, cache *redisCache, log *slog.Logger, m *metrics, o HubOptions) *Hub {
	def := func(d, v time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return v
	}
	return &Hub{
		src: src, cache: cache, log: log, metrics: m, clock: wallClock{},
		dbTimeout:      def(o.DBTimeout, DefaultDBTimeout),
		pollInterval:   def(o.PollInterval, DefaultPollInterval),
		streamInterval: def(o.StreamInterval, DefaultStreamInterval),
		heartbeat:      def(o.HeartbeatInterval, DefaultHeartbeatInterval),
		entries:        map[string]*entry{},
		dirty:          map[string]time.Time{},
		wake:           make(chan struct{}, 1),
	}
}

func (h *Hub) now() time.Time { return h.clock.Now() }

// get returns the election's current snapshot, loading it on first use. Concurrent first
// requests for one election share a single query.
func (h *Hub) get(ctx context.Context, id string) (*entry, *snapshot, error) {
	h.mu.Lock()
	e, ok := h.entries[id]
	if !ok {
		if len(h.entries) >= maxTracked || h.closed {
			h.mu.Unlock()
			h.metrics.cacheLookups.WithLabelValues("memory", "overflow").Inc()
			s, err := h.loadDirect(ctx, id)
			return nil, s, err
		}
		e = &entry{id: id, ready: make(chan struct{})}
		e.bc = newBroadcaster(h, e)
		h.entries[id] = e
		h.mu.Unlock()
		h.metrics.cacheLookups.WithLabelValues("memory", "miss").Inc()
		start := h.now()
		h.load(e)
		h.log.Info("results cache miss: election loaded from PostgreSQL", "requestId", requestID(ctx), "electionId", id,
			"took", h.now().Sub(start).String(), "ok", e.err == nil)
	} else {
		h.mu.Unlock()
		select {
		case <-e.ready:
			h.metrics.cacheLookups.WithLabelValues("memory", "hit").Inc()
		default:
			h.metrics.cacheLookups.WithLabelValues("memory", "wait").Inc()
			select {
			case <-e.ready:
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
		}
	}
	if e.err != nil {
		return nil, nil, e.err
	}
	e.used.Store(h.now().UnixNano())
	return e, e.snap.Load(), nil
}

// load runs an entry's first query. It is detached from the request that triggered it: other
// requests wait for the same result, and one impatient client must not fail them all.
func (h *Hub) load(e *entry) {
	ctx, cancel := context.WithTimeout(context.Background(), h.dbTimeout)
	defer cancel()
	observed := h.now()
	s, err := h.loadDirect(ctx, e.id)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		e.err = err
		delete(h.entries, e.id)
		close(e.ready)
		return
	}
	s.observed = observed
	e.snap.Store(s)
	e.bc.baseline(s)
	if e.notifiedWhileLoading {
		h.markLocked(e.id, observed)
	}
	close(e.ready)
}

// loadDirect reads one election from PostgreSQL; when PostgreSQL fails it falls back to the
// copy in Redis (possibly some seconds old), which keeps the on-air numbers up through a short
// database outage.
func (h *Hub) loadDirect(ctx context.Context, id string) (*snapshot, error) {
	m, err := h.src.ElectionsCounts(ctx, []string{id})
	if err == nil {
		ec, ok := m[id]
		if !ok {
			return nil, ErrNotFound
		}
		return newSnapshot(ec, h.now()), nil
	}
	if h.cache != nil {
		if ec, ok := h.cache.get(ctx, id); ok {
			h.log.Warn("database unavailable; answering from the Redis copy", "electionId", id, "err", err)
			return newSnapshot(ec, h.now()), nil
		}
	}
	return nil, err
}

// ElectionCounts implements Store.
func (h *Hub) ElectionCounts(ctx context.Context, id string) (ElectionCounts, error) {
	_, s, err := h.get(ctx, id)
	if err != nil {
		return ElectionCounts{}, err
	}
	return s.counts, nil
}

// LiveTotal implements Store.
func (h *Hub) LiveTotal(ctx context.Context, id string) (LiveTotal, error) {
	_, s, err := h.get(ctx, id)
	if err != nil {
		return LiveTotal{}, err
	}
	return LiveTotal{ElectionID: id, Status: s.counts.Status, Votes: s.total,
		CountsUpdatedAt: s.newestCount(), ElectionUpdatedAt: s.counts.UpdatedAt}, nil
}

// Ping implements Store.
func (h *Hub) Ping(ctx context.Context) error { return h.src.Ping(ctx) }

// mark schedules a refresh of one election, or of all with id "".
func (h *Hub) mark(id string, at time.Time) {
	h.mu.Lock()
	h.markLocked(id, at)
	h.mu.Unlock()
}

func (h *Hub) markLocked(id string, at time.Time) {
	if id == "" {
		if h.allDirty.IsZero() {
			h.allDirty = at
		}
	} else {
		e, ok := h.entries[id]
		if !ok {
			return // nobody asked for it: nothing to refresh
		}
		select {
		case <-e.ready:
		default:
			e.notifiedWhileLoading = true
			return
		}
		if _, ok := h.dirty[id]; !ok {
			h.dirty[id] = at
		}
	}
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Run listens for notifications and refreshes tracked elections until ctx ends. It does not
// fail: a lost database connection is retried, and meanwhile the poll keeps trying too.
func (h *Hub) Run(ctx context.Context, dsn string) {
	var wg sync.WaitGroup
	if dsn != "" {
		wg.Add(1)
		go func() { defer wg.Done(); h.listen(ctx, dsn) }()
	}
	h.refreshLoop(ctx)
	wg.Wait()
}

// listen holds one dedicated connection in LISTEN mode (a pooled connection cannot: the pool
// would hand it to queries). After every (re)connect all tracked elections are refreshed,
// since notifications sent while we were away are lost.
func (h *Hub) listen(ctx context.Context, dsn string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listenOnce(ctx, dsn)
		h.metrics.listenerUp.Set(0)
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("notification listener lost; polling only until it reconnects", "err", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (h *Hub) listenOnce(ctx context.Context, dsn string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pgx.Connect(cctx, dsn)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{contract.ChannelVoteCounts, contract.ChannelElectionsChanged} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			return err
		}
	}
	h.metrics.listenerUp.Set(1)
	h.mark("", h.now())
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		at := h.now()
		h.metrics.notifications.WithLabelValues(n.Channel).Inc()
		h.notified(n.Channel, n.Payload, at)
	}
}

// notified handles one notification that arrived at at. The processor's count deltas are
// applied at once, without a query; anything else (an election changed, a payload without
// usable deltas) schedules a re-read of the elections it names, or of all.
func (h *Hub) notified(channel, payload string, at time.Time) {
	if channel == contract.ChannelVoteCounts {
		if deltas, ok := countDeltas(payload); ok {
			h.applyDeltas(deltas, at)
			return
		}
	}
	ids, ok := notifiedElections(payload)
	if !ok {
		h.mark("", at)
		return
	}
	for _, id := range ids {
		h.mark(id, at)
	}
}

// countDeltas reads the processor's contract.CountsChanged. ok=false when the payload has no
// deltas this worker can apply on its own (another format, a malformed entry, an election
// listed without its deltas): the caller then re-reads the elections it names.
func countDeltas(payload string) ([]contract.CountDelta, bool) {
	var cc contract.CountsChanged
	if err := json.Unmarshal([]byte(payload), &cc); err != nil || len(cc.Deltas) == 0 {
		return nil, false
	}
	covered := make(map[string]bool, len(cc.ElectionIDs))
	for i := range cc.Deltas {
		d := &cc.Deltas[i]
		if d.ElectionID == "" || d.CandidateID == "" || d.Votes <= 0 {
			return nil, false
		}
		// Entries are keyed by the canonical form, as the HTTP paths and reads produce it.
		if id, ok := contract.CanonicalUUID(d.ElectionID); ok {
			d.ElectionID = id
		}
		if id, ok := contract.CanonicalUUID(d.CandidateID); ok {
			d.CandidateID = id
		}
		covered[d.ElectionID] = true
	}
	for _, id := range cc.ElectionIDs {
		if c, ok := contract.CanonicalUUID(id); ok {
			id = c
		}
		if !covered[id] {
			return nil, false
		}
	}
	return cc.Deltas, true
}

// applyDeltas moves the counts of tracked elections to the totals the processor committed. A
// count only ever grows, so max(held, total) is right whatever the order of notifications and
// re-reads, and a payload applied twice changes nothing. A candidate this worker does not
// hold, or an election still loading, is re-read instead.
func (h *Hub) applyDeltas(deltas []contract.CountDelta, at time.Time) {
	for len(deltas) > 0 {
		id, n := deltas[0].ElectionID, 1
		for n < len(deltas) && deltas[n].ElectionID == id {
			n++
		}
		ds := deltas[:n]
		deltas = deltas[n:]

		h.mu.Lock()
		e := h.entries[id]
		loaded := false
		if e != nil {
			select {
			case <-e.ready:
				loaded = true // a failed load removed its entry: e is a loaded one
			default:
				// The load in flight may predate this commit: re-read once it is done.
				e.notifiedWhileLoading = true
			}
		}
		h.mu.Unlock()
		if !loaded {
			continue // untracked: nobody asked for it
		}
		var applied, stale, unknown int
		h.advance(e, at, func(old *snapshot) ElectionCounts {
			applied, stale, unknown = 0, 0, 0
			ec := old.counts
			ec.Candidates = slices.Clone(ec.Candidates)
			for _, d := range ds {
				i := slices.IndexFunc(ec.Candidates, func(c CandidateCount) bool { return c.ID == d.CandidateID })
				switch {
				case i < 0:
					unknown++
				case d.Votes > ec.Candidates[i].Votes:
					ec.Candidates[i].Votes, ec.Candidates[i].UpdatedAt = d.Votes, at
					applied++
				default:
					stale++ // already held: a re-read got there first, or a repeat
				}
			}
			return ec
		})
		h.metrics.deltas.WithLabelValues("applied").Add(float64(applied))
		h.metrics.deltas.WithLabelValues("stale").Add(float64(stale))
		if unknown > 0 {
			h.metrics.deltas.WithLabelValues("unknown").Add(float64(unknown))
			h.mark(id, at)
		}
	}
}

// advance replaces e's snapshot with next(current) if anything visible changed, and hands the
// new one to the cache and the broadcaster. Deltas and re-reads both go through here under the
// entry's write lock, so neither overwrites what the other just applied, and the broadcaster
// sees snapshots in the order they were made.
func (h *Hub) advance(e *entry, observed time.Time, next func(old *snapshot) ElectionCounts) {
	e.write.Lock()
	defer e.write.Unlock()
	old := e.snap.Load()
	ec := next(old)
	if old != nil && old.sameAs(ec) {
		return
	}
	s := newSnapshot(ec, observed)
	e.snap.Store(s)
	h.metrics.snapshots.Inc()
	if h.cache != nil {
		h.cache.put(s)
	}
	e.bc.update(s)
}

// notifiedElections reads the election ids out of a notification payload that is not applied
// as deltas. It accepts {"electionIds":[…]} (further fields are ignored), {"electionId":…} or
// {"id":…}, and a bare id as the control plane sends. ok=false means "could not tell": the
// caller then refreshes everything.
func notifiedElections(payload string) (ids []string, ok bool) {
	payload = strings.TrimSpace(payload)
	if id, valid := contract.CanonicalUUID(payload); valid {
		return []string{id}, true
	}
	var p struct {
		ElectionIDs []string `json:"electionIds"`
		ElectionID  string   `json:"electionId"`
		ID          string   `json:"id"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil {
		return nil, false
	}
	for _, s := range append(p.ElectionIDs, p.ElectionID, p.ID) {
		if id, valid := contract.CanonicalUUID(s); valid {
			ids = append(ids, id)
		}
	}
	return ids, len(ids) > 0
}

// refreshLoop runs the re-reads: the poll, and the elections marked by notifications that are
// not deltas. One goroutine, so re-reads never overlap; Hub.advance merges each with the
// deltas applied meanwhile.
func (h *Hub) refreshLoop(ctx context.Context) {
	poll := time.NewTicker(h.pollInterval)
	defer poll.Stop()
	beat := time.NewTicker(h.heartbeat)
	defer beat.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
			// Give a burst of commits a moment to land in one re-read.
			if gap := minRefreshGap - time.Since(last); gap > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(gap):
				}
			}
		case <-poll.C:
			h.mark("", h.now())
			h.evictIdle()
		case <-beat.C:
			h.heartbeatAll()
			continue
		}
		last = time.Now()
		h.refresh(ctx)
	}
}

// refresh re-reads every election marked dirty in one query and applies what changed.
func (h *Hub) refresh(ctx context.Context) {
	h.mu.Lock()
	since := map[string]time.Time{}
	if !h.allDirty.IsZero() {
		for id, e := range h.entries {
			select {
			case <-e.ready:
				since[id] = h.allDirty
			default:
			}
		}
	}
	for id, at := range h.dirty {
		if prev, ok := since[id]; !ok || at.Before(prev) {
			since[id] = at
		}
	}
	trigger := "notify"
	if !h.allDirty.IsZero() {
		trigger = "poll"
	}
	h.allDirty = time.Time{}
	clear(h.dirty)
	h.mu.Unlock()
	if len(since) == 0 {
		return
	}

	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, h.dbTimeout)
	fresh, err := h.src.ElectionsCounts(qctx, slices.Sorted(maps.Keys(since)))
	cancel()
	h.metrics.refreshDuration.WithLabelValues(trigger).Observe(time.Since(start).Seconds())
	if err != nil {
		h.metrics.refreshes.WithLabelValues(trigger, "error").Inc()
		if ctx.Err() == nil {
			h.log.Warn("refresh failed; serving the counts held in memory", "elections", len(since), "err", err)
		}
		return // the next poll tries again
	}
	h.metrics.refreshes.WithLabelValues(trigger, "ok").Inc()
	for id, observed := range since {
		read, ok := fresh[id]
		if !ok {
			continue // deleted: keep serving what we had until it is evicted
		}
		h.mu.Lock()
		e := h.entries[id]
		h.mu.Unlock()
		if e == nil {
			continue
		}
		h.advance(e, observed, func(old *snapshot) ElectionCounts {
			h.observeCountLag(old, read)
			return mergeRead(old, read)
		})
	}
}

// mergeRead combines a re-read with the snapshot held. The read decides the election's fields
// and every count it shows at least as high (with its stored updated_at); a count held higher
// came from a delta committed after the read's snapshot was taken, and stays.
func mergeRead(old *snapshot, read ElectionCounts) ElectionCounts {
	if old == nil {
		return read
	}
	held := make(map[string]CandidateCount, len(old.counts.Candidates))
	for _, c := range old.counts.Candidates {
		held[c.ID] = c
	}
	read.Candidates = slices.Clone(read.Candidates)
	for i, c := range read.Candidates {
		if h, ok := held[c.ID]; ok && h.Votes > c.Votes {
			read.Candidates[i].Votes, read.Candidates[i].UpdatedAt = h.Votes, h.UpdatedAt
		}
	}
	return read
}

// observeCountLag records, for the newest count a read brings news of, how long after its
// processor transaction (vote_counts.updated_at) this worker held it: now for a count the read
// shows first, the delta's arrival for one a delta brought before.
func (h *Hub) observeCountLag(old *snapshot, read ElectionCounts) {
	held := map[string]CandidateCount{}
	if old != nil {
		for _, c := range old.counts.Candidates {
			held[c.ID] = c
		}
	}
	var newest, since time.Time
	for _, c := range read.Candidates {
		if c.UpdatedAt.IsZero() || !c.UpdatedAt.After(newest) {
			continue
		}
		hc, ok := held[c.ID]
		switch {
		case !ok || c.Votes > hc.Votes:
			newest, since = c.UpdatedAt, h.now()
		case c.Votes == hc.Votes && hc.UpdatedAt.After(c.UpdatedAt):
			newest, since = c.UpdatedAt, hc.UpdatedAt // held since the delta arrived
		}
	}
	if !newest.IsZero() {
		h.metrics.countLag.Observe(since.Sub(newest).Seconds())
	}
}

// evictIdle forgets elections that nobody requested for idleEviction and nobody streams.
func (h *Hub) evictIdle() {
	cutoff := h.now().Add(-idleEviction).UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, e := range h.entries {
		select {
		case <-e.ready:
		default:
			continue
		}
		if e.used.Load() < cutoff && e.bc.clientCount() == 0 {
			delete(h.entries, id)
		}
	}
	h.metrics.tracked.Set(float64(len(h.entries)))
}

func (h *Hub) heartbeatAll() {
	h.mu.Lock()
	es := slices.Collect(maps.Values(h.entries))
	h.mu.Unlock()
	for _, e := range es {
		e.bc.heartbeat()
	}
}

// subscribe attaches a stream client to an election, loading it if needed.
func (h *Hub) subscribe(ctx context.Context, id string, c *client) (*broadcaster, error) {
	for range 3 {
		e, s, err := h.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if e == nil {
			return nil, errTooManyElections
		}
		if !streamable(s.counts.Status) {
			return nil, ErrNotFound
		}
		h.mu.Lock()
		current := h.entries[id] == e
		if current {
			// Touch under the lock so evictIdle cannot drop the entry between check and add.
			e.used.Store(h.now().UnixNano())
			e.bc.add(c)
		}
		h.mu.Unlock()
		if current {
			return e.bc, nil
		}
	}
	return nil, errors.New("election evicted while subscribing")
}

// errTooManyElections: the stream needs a tracked election and the hub is full.
var errTooManyElections = errors.New("too many elections tracked")

// Shutdown closes every stream with "going away", so clients reconnect to another replica.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	h.closed = true
	es := slices.Collect(maps.Values(h.entries))
	h.mu.Unlock()
	for _, e := range es {
		e.bc.closeAll()
	}
}
