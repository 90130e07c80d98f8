package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devidp"
)

const testAudience = "https://votes.test/api"

// idp is a development identity provider behind an httptest server.
type idp struct {
	p   *devidp.Provider
	url string
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer := "http://" + srv.Listener.Addr().String() + "/"
	p, err := devidp.New(issuer, testAudience)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = p.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return &idp{p: p, url: srv.URL}
}

func (i *idp) token(t *testing.T, sub string, admin bool) string {
	t.Helper()
	tok, err := i.p.Mint(sub, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testWorker runs a complete worker (hub listening on the real PostgreSQL, optional Redis) behind
// an httptest server.
type testWorker struct {
	w   *Worker
	srv *httptest.Server
	idp *idp
	rdb *redis.Client
}

func startWorker(t *testing.T, withRedis bool, mutate func(*Config)) *testWorker {
	t.Helper()
	i := newIDP(t)
	cfg := Config{DatabaseURL: dsn, ListenAddr: "127.0.0.1:0", DBTimeout: 2 * time.Second,
		JWTIssuer: i.p.Issuer, JWTAudience: testAudience, JWKSURL: i.url + "/.well-known/jwks.json",
		PollInterval: 200 * time.Millisecond, StreamInterval: 300 * time.Millisecond, HeartbeatInterval: time.Hour,
		MaxStreamsPerViewer: 5, MaxStreams: 100, StreamOrigins: []string{"*"}}
	if mutate != nil {
		mutate(&cfg)
	}
	var rdb *redis.Client
	if withRedis {
		rdb = redis.NewClient(&redis.Options{Addr: redisAddr})
		t.Cleanup(func() { rdb.Close() })
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWorker(ctx, cfg, pool, rdb, quietLog())
	w.Server.now = func() time.Time { return generated }
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx, dsn) }()
	srv := httptest.NewUnstartedServer(w.Handler())
	srv.Config.RegisterOnShutdown(w.Shutdown)
	srv.Start()
	t.Cleanup(func() {
		w.Shutdown()
		srv.Close()
		cancel()
		<-done
	})
	// The listener is up once the gauge says so; tests rely on notifications.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(get(t, srv.URL+"/metrics", nil).body, "voting_results_notify_listener_up 1") {
		if time.Now().After(deadline) {
			t.Fatal("notification listener did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &testWorker{w: w, srv: srv, idp: i, rdb: rdb}
}

func (tw *testWorker) wsURL(electionID, token string) string {
	u := strings.Replace(tw.srv.URL, "http://", "ws://", 1) + "/api/v1/results/stream/" + electionID
	if token != "" {
		u += "?token=" + token
	}
	return u
}

// stream is a connected test client.
type stream struct {
	t    *testing.T
	conn *websocket.Conn
}

func dial(t *testing.T, url string) (*stream, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, resp, err
	}
	s := &stream{t: t, conn: c}
	t.Cleanup(func() { c.CloseNow() })
	return s, resp, nil
}

func (s *stream) next(d time.Duration) StreamMessage {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, b, err := s.conn.Read(ctx)
	if err != nil {
		s.t.Fatalf("read stream: %v", err)
	}
	var m StreamMessage
	if err := json.Unmarshal(b, &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

// nextOf skips heartbeats.
func (s *stream) nextOf(typ string, d time.Duration) StreamMessage {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := s.next(time.Until(deadline))
		if m.Type == typ {
			return m
		}
	}
}

// commit changes a count the way the processor does: update and notify in one transaction.
func commit(t *testing.T, election, candidate string, add int, notify bool) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO vote_counts (election_id, candidate_id, votes) VALUES ($1, $2, $3)
		ON CONFLICT (election_id, candidate_id) DO UPDATE SET votes = vote_counts.votes + EXCLUDED.votes, updated_at = now()`,
		election, candidate, add); err != nil {
		t.Fatal(err)
	}
	if notify {
		if _, err := tx.Exec(ctx, `SELECT pg_notify('vote_counts', $1)`, `{"electionIds":["`+election+`"]}`); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func candidateVotes(m StreamMessage, id string) (votes, delta int64) {
	for _, c := range m.Candidates {
		if c.CandidateID == id {
			return c.Votes, c.Delta
		}
	}
	return -1, -1
}

func TestStreamPushesCommitsWithinASecond(t *testing.T) {
	tw := startWorker(t, false, nil)
	s := seed(t, contract.StatusActive)
	st, _, err := dial(t, tw.wsURL(s.election, tw.idp.token(t, "viewer-1", false)))
	if err != nil {
		t.Fatal(err)
	}
	first := st.next(2 * time.Second)
	if v, d := candidateVotes(first, s.jane); first.Type != MsgVoteUpdate || v != 5 || d != 0 || *first.TotalVotes != 9 || first.ElectionID != s.election {
		t.Fatalf("first message %+v", first)
	}

	// Pushed by the notification: well inside a second.
	time.Sleep(400 * time.Millisecond) // past the throttle interval of the initial state
	start := time.Now()
	commit(t, s.election, s.carol, 2, true)
	m := st.nextOf(MsgVoteUpdate, time.Second)
	if lag := time.Since(start); lag > 500*time.Millisecond {
		t.Fatalf("update %s after the commit", lag)
	}
	if v, d := candidateVotes(m, s.carol); v != 2 || d != 2 || *m.TotalVotes != 11 {
		t.Fatalf("update %+v", m)
	}
	if v, d := candidateVotes(m, s.jane); v != 5 || d != 0 {
		t.Fatalf("unchanged candidate in %+v", m)
	}
	// The live endpoint agrees at once.
	if r := get(t, tw.srv.URL+"/api/v1/results/live/"+s.election, nil); !strings.Contains(r.body, `"currentVotes":11`) {
		t.Fatalf("live after commit: %s", r.body)
	}

	// A commit whose notification is lost is still picked up by the poll.
	time.Sleep(400 * time.Millisecond)
	commit(t, s.election, s.bob, 1, false)
	m = st.nextOf(MsgVoteUpdate, 2*time.Second)
	if v, d := candidateVotes(m, s.bob); v != 3 || d != 1 {
		t.Fatalf("polled update %+v", m)
	}

	// Closing the election (nobody notifies) reaches the stream as STATUS_CHANGE.
	if _, err := pool.Exec(context.Background(), `UPDATE elections SET status = 'CLOSED', updated_at = now() WHERE id = $1`, s.election); err != nil {
		t.Fatal(err)
	}
	m = st.nextOf(MsgStatusChange, 2*time.Second)
	if m.NewStatus != contract.StatusClosed || !strings.Contains(m.Message, "ended") {
		t.Fatalf("status change %+v", m)
	}
	r := get(t, tw.srv.URL+"/api/v1/results/"+s.election, nil)
	if !strings.Contains(r.body, `"status":"CLOSED"`) || r.header.Get("Cache-Control") != "public, max-age=300" {
		t.Fatalf("results after close: %s %v", r.body, r.header)
	}
}

func TestStreamRejections(t *testing.T) {
	tw := startWorker(t, true, nil)
	s := seed(t, contract.StatusActive)
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	viewer := uuid.NewString()
	tok := tw.idp.token(t, viewer, false)

	other, err := devidp.New(tw.idp.p.Issuer, testAudience) // right issuer, wrong key
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Mint(viewer, false, time.Hour)
	for name, url := range map[string]string{"no token": tw.wsURL(s.election, ""), "forged": tw.wsURL(s.election, forged),
		"garbage": tw.wsURL(s.election, "not.a.jwt")} {
		if _, resp, err := dial(t, url); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: dial err %v, response %v", name, err, resp)
		}
	}
	// Plain HTTP shows the contract's error body.
	wsToHTTP := func(u string) string { return strings.Replace(u, "ws://", "http://", 1) }
	get(t, wsToHTTP(tw.wsURL(s.election, "")), map[string]string{"X-Request-Id": rid}).expect(t, 401,
		`{"code":"UNAUTHORIZED","message":"the token query parameter is required","traceId":"`+rid+`"}`+"\n")
	get(t, wsToHTTP(tw.wsURL(s.election, tok)), map[string]string{"X-Request-Id": rid}).expect(t, 400,
		`{"code":"INVALID_REQUEST","message":"this endpoint is a WebSocket: send an Upgrade: websocket request","traceId":"`+rid+`"}`+"\n")
	get(t, wsToHTTP(tw.wsURL("nope", tok)), map[string]string{"X-Request-Id": rid}).expect(t, 400,
		`{"code":"INVALID_ELECTION_ID","message":"electionId must be a UUID","traceId":"`+rid+`"}`+"\n")
	missing := uuid.NewString()
	if _, resp, err := dial(t, tw.wsURL(missing, tok)); err == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown election: %v %v", err, resp)
	}
	for _, status := range []string{contract.StatusDraft, contract.StatusCancelled} {
		e := seed(t, status)
		if _, resp, err := dial(t, tw.wsURL(e.election, tok)); err == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s election: %v %v", status, err, resp)
		}
	}
	// A scheduled election streams, so the on-air screen can wait for voting to open.
	if st, resp, err := dial(t, tw.wsURL(seed(t, contract.StatusScheduled).election, tw.idp.token(t, uuid.NewString(), false))); err != nil {
		t.Fatalf("scheduled election: %v %v", err, resp)
	} else {
		st.next(2 * time.Second)
		st.conn.CloseNow()
	}

	// Five streams per viewer; the sixth is refused with 429, and a freed slot can be reused.
	var open []*stream
	for i := range 5 {
		st, resp, err := dial(t, tw.wsURL(s.election, tok))
		if err != nil {
			t.Fatalf("stream %d: %v %v", i+1, err, resp)
		}
		st.next(2 * time.Second)
		open = append(open, st)
	}
	_, resp, err := dial(t, tw.wsURL(s.election, tok))
	if err == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("sixth stream: %v %v", err, resp)
	}
	// The limit is held in Redis too, so another worker refuses the sixth as well.
	if n, err := tw.rdb.ZCard(context.Background(), streamsKey(viewer)).Result(); err != nil || n != 5 {
		t.Fatalf("redis leases = %d, %v", n, err)
	}
	tw2 := startWorker(t, true, nil)
	tok2 := tw2.idp.token(t, viewer, false) // tw2 trusts its own IdP

	if _, resp, err := dial(t, tw2.wsURL(s.election, tok2)); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("sixth stream on a second worker: %v %v", err, resp)
	}
	open[0].conn.Close(websocket.StatusNormalClosure, "bye")
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, _, err := dial(t, tw.wsURL(s.election, tok))
		if err == nil {
			st.next(2 * time.Second)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after a close: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Another viewer is not affected.
	if _, _, err := dial(t, tw.wsURL(s.election, tw.idp.token(t, uuid.NewString(), false))); err != nil {
		t.Fatalf("other viewer: %v", err)
	}
}

func TestStreamShutdownSaysGoingAway(t *testing.T) {
	tw := startWorker(t, false, nil)
	s := seed(t, contract.StatusActive)
	st, _, err := dial(t, tw.wsURL(s.election, tw.idp.token(t, "v", false)))
	if err != nil {
		t.Fatal(err)
	}
	st.next(2 * time.Second)
	tw.w.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, _, err = st.conn.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("read after shutdown: %v", err)
	}
}

// TestManyClientsOneBroadcast: every client of an election gets the same update; a client that
// stops reading is dropped without holding up the others.
func TestManyClientsOneBroadcast(t *testing.T) {
	tw := startWorker(t, false, func(c *Config) { c.MaxStreamsPerViewer = 1000 })
	s := seed(t, contract.StatusActive)
	tok := tw.idp.token(t, "wall-of-screens", false)
	const n = 50
	streams := make([]*stream, n)
	for i := range streams {
		st, _, err := dial(t, tw.wsURL(s.election, tok))
		if err != nil {
			t.Fatal(err)
		}
		st.next(2 * time.Second)
		streams[i] = st
	}
	time.Sleep(400 * time.Millisecond)
	commit(t, s.election, s.alice, 7, true)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, b, err := st.conn.Read(ctx)
			if err != nil {
				errs <- err
				return
			}
			if !strings.Contains(string(b), `"votes":9,"delta":7`) {
				errs <- fmt.Errorf("unexpected %s", b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r := get(t, tw.srv.URL+"/metrics", nil)
	for _, want := range []string{"voting_results_stream_clients 50", `voting_results_stream_opens_total{result="accepted"} 50`,
		"voting_results_broadcast_lag_seconds_count", `voting_results_http_requests_total{code="101",endpoint="GET /api/v1/results/stream/{electionId}"} 50`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestStatisticsEndpoint(t *testing.T) {
	tw := startWorker(t, false, nil)
	s := seed(t, contract.StatusActive)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE elections SET eligible_voters = 27 WHERE id = $1`, s.election)
	// What the processor maintains for the seeded counts (Jane 5, Alice 2, Bob 2), voting
	// opened at 18:00: 25600 s after the opening for the 9 votes together.
	// Rows are by serving and home region: Jane's three 19:00 votes in eu-west-1 were decided in
	// two home stores, and a refused second vote (duplicates) adds no vote; the statistics count
	// by the serving region alone.
	exec(`INSERT INTO vote_stats (election_id, hour, region, home_region, candidate_id, votes, since_open_ms, duplicates) VALUES
		($1, '2026-11-01T18:00:00Z', 'eu-west-1', 'eu-west-1', $2, 2, 1200000, 0),
		($1, '2026-11-01T18:00:00Z', 'us-east-1', 'us-east-1', $3, 1, 1800000, 0),
		($1, '2026-11-01T19:00:00Z', 'eu-west-1', 'eu-west-1', $2, 2, 7200000, 0),
		($1, '2026-11-01T19:00:00Z', 'eu-west-1', 'us-east-1', $2, 1, 3600000, 0),
		($1, '2026-11-01T19:00:00Z', 'eu-west-1', 'eu-west-1', $4, 2, 7800000, 0),
		($1, '2026-11-01T19:00:00Z', 'eu-west-1', 'eu-west-1', $3, 1, 4000000, 0),
		($1, '2026-11-01T19:00:00Z', 'us-east-1', 'eu-west-1', $3, 0, 0, 1)`, s.election, s.jane, s.alice, s.bob)
	url := tw.srv.URL + "/api/v1/results/statistics/" + s.election
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	auth := func(tok string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + tok, "X-Request-Id": rid}
	}

	r := get(t, url, map[string]string{"X-Request-Id": rid})
	r.expect(t, 401, `{"code":"UNAUTHORIZED","message":"an Authorization: Bearer token is required","traceId":"`+rid+`"}`+"\n")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
	get(t, url, auth("garbage")).expect(t, 401, `{"code":"UNAUTHORIZED","message":"invalid or expired token","traceId":"`+rid+`"}`+"\n")
	get(t, url, auth(tw.idp.token(t, "viewer", false))).expect(t, 403,
		`{"code":"FORBIDDEN","message":"statistics need the admin:elections or read:statistics permission","traceId":"`+rid+`"}`+"\n")
	admin := tw.idp.token(t, "admin", true)
	for _, q := range []string{"includeHourly=sure", "includeHourly=", "includeRegional=1&includeHourly=true"} {
		name, _, _ := strings.Cut(q, "=")
		get(t, url+"?"+q, auth(admin)).expect(t, 400,
			`{"code":"INVALID_REQUEST","message":"`+name+` must be true or false","traceId":"`+rid+`"}`+"\n")
	}
	missing := uuid.NewString()
	get(t, tw.srv.URL+"/api/v1/results/statistics/"+missing, auth(admin)).expect(t, 404,
		`{"code":"ELECTION_NOT_FOUND","message":"election `+missing+` not found","traceId":"`+rid+`"}`+"\n")

	r = get(t, url, auth(admin))
	want := `{"electionId":"` + s.election + `","totalVotes":9,"totalEligibleVoters":27,"turnoutPercentage":33.33,"candidateStats":[` +
		`{"candidateId":"` + s.jane + `","name":"Jane Doe","party":"Progressive Party","votes":5,"percentage":55.56},` +
		`{"candidateId":"` + s.alice + `","name":"Alice Smith","party":"Conservative Party","votes":2,"percentage":22.22},` +
		`{"candidateId":"` + s.bob + `","name":"Bob Brown","votes":2,"percentage":22.22},` +
		`{"candidateId":"` + s.carol + `","name":"Carol White","party":"Green Party","votes":0,"percentage":0}],` +
		`"peakVotingTime":"2026-11-01T19:00:00Z","averageVotingTime":2844.44,"generatedAt":"2026-11-01T20:15:00Z"}` + "\n"
	r.expect(t, 200, want)
	if cc := r.header.Get("Cache-Control"); cc != "private, no-store" {
		t.Fatalf("Cache-Control = %q", cc)
	}
	r = get(t, url+"?includeHourly=true&includeRegional=true", auth(admin))
	var st ElectionStatistics
	if err := json.Unmarshal([]byte(r.body), &st); err != nil || r.code != 200 {
		t.Fatalf("%d %s %v", r.code, r.body, err)
	}
	wantRegions := []RegionCount{
		{"eu-west-1", 8, []RegionCandidate{{s.jane, 5}, {s.alice, 1}, {s.bob, 2}, {s.carol, 0}}},
		{"us-east-1", 1, []RegionCandidate{{s.jane, 0}, {s.alice, 1}, {s.bob, 0}, {s.carol, 0}}},
	}
	if len(st.VotesPerHour) != 2 || st.VotesPerHour[0].Count != 3 || st.VotesPerHour[1].Count != 6 ||
		!reflect.DeepEqual(st.RegionalBreakdown, wantRegions) {
		t.Fatalf("breakdowns %+v", st)
	}
	if !strings.Contains(r.body, `"regionalBreakdown":[{"region":"eu-west-1","totalVotes":8,"candidates":[{"candidateId":"`+s.jane+`","votes":5},`) {
		t.Fatalf("regionalBreakdown JSON: %s", r.body)
	}
}

func TestRedisCopyAndFallback(t *testing.T) {
	tw := startWorker(t, true, nil)
	s := seed(t, contract.StatusActive)
	get(t, tw.srv.URL+"/api/v1/results/"+s.election, nil) // starts tracking
	commit(t, s.election, s.carol, 4, true)
	ctx := context.Background()
	var cached cachedResults
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, err := tw.rdb.Get(ctx, ResultsKey(s.election)).Bytes()
		if err == nil && json.Unmarshal(b, &cached) == nil && cached.TotalVotes == 13 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis copy not written: %s %v", b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ttl := tw.rdb.TTL(ctx, ResultsKey(s.election)).Val(); ttl < 4*time.Minute || ttl > 5*time.Minute {
		t.Fatalf("TTL %s, want 5 minutes", ttl)
	}
	if cached.ElectionTitle != "Presidential Election 2026" || len(cached.Totals) != 4 || cached.Totals[0].Percentage == nil {
		t.Fatalf("cached body %+v", cached)
	}

	// A fresh worker whose database is down answers from the Redis copy, same body and ETag.
	want := get(t, tw.srv.URL+"/api/v1/results/"+s.election, nil)
	m := newMetrics()
	h := newHub(&fakeSource{fail: errors.New("database down")}, newRedisCache(tw.rdb, quietLog(), m), quietLog(), m, HubOptions{})
	srv := httptest.NewServer(NewServer(h, quietLog(), time.Second, withMetrics(m)).Handler())
	defer srv.Close()
	r := get(t, srv.URL+"/api/v1/results/"+s.election, nil)
	if r.code != 200 || r.header.Get("ETag") != want.header.Get("ETag") || !strings.Contains(r.body, `"totalVotes":13`) {
		t.Fatalf("fallback %d %s ETag %s, want ETag %s", r.code, r.body, r.header.Get("ETag"), want.header.Get("ETag"))
	}
	// Neither in PostgreSQL nor in Redis: 503.
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	get(t, srv.URL+"/api/v1/results/"+uuid.NewString(), map[string]string{"X-Request-Id": rid}).expect(t, 503,
		`{"code":"SERVICE_UNAVAILABLE","message":"results are temporarily unavailable, retry shortly","traceId":"`+rid+`"}`+"\n")

	// Cancelled: the election has no results any more, and its copy goes too (a fallback must
	// not serve them).
	if _, err := pool.Exec(ctx, `UPDATE elections SET status = 'CANCELLED', updated_at = now() WHERE id = $1`, s.election); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_notify('elections_changed', $1)`, s.election); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); tw.rdb.Exists(ctx, ResultsKey(s.election)).Val() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the Redis copy of a cancelled election is still there")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := get(t, tw.srv.URL+"/api/v1/results/"+s.election, nil); r.code != 404 {
		t.Fatalf("cancelled election: %d %s", r.code, r.body)
	}
}

func TestLivePageIsServed(t *testing.T) {
	srv := newTestServer(t, PGStore{Pool: pool})
	id := uuid.NewString()
	r := get(t, srv.URL+"/api/v1/results/page/"+id+"?token=abc", nil)
	if r.code != 200 || !strings.Contains(r.body, `<ol id="rows"`) || r.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("page: %d %v", r.code, r.header)
	}
	for h, want := range map[string]string{"Referrer-Policy": "no-referrer", "Content-Security-Policy": pageCSP,
		"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"} {
		if got := r.header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	get(t, srv.URL+"/api/v1/results/page/"+id, map[string]string{"If-None-Match": r.header.Get("ETag")}).expect(t, 304, "")
	for file, ctype := range map[string]string{"live.js": "text/javascript; charset=utf-8", "live.css": "text/css; charset=utf-8"} {
		r := get(t, srv.URL+"/api/v1/results/page/assets/"+file, nil)
		if r.code != 200 || r.header.Get("Content-Type") != ctype || len(r.body) < 500 {
			t.Errorf("%s: %d %q %d bytes", file, r.code, r.header.Get("Content-Type"), len(r.body))
		}
	}
	if r := get(t, srv.URL+"/api/v1/results/page/assets/secret.txt", nil); r.code != 404 {
		t.Errorf("unknown asset: %d", r.code)
	}
	if r := get(t, srv.URL+"/api/v1/results/page/not-an-id", nil); r.code != 400 {
		t.Errorf("bad id: %d", r.code)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	srv := newTestServer(t, PGStore{Pool: pool})
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/results/"+uuid.NewString(), nil)
	req.Header.Set("X-Request-Id", rid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e contract.ErrorResponse
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 405 || e.Code != contract.CodeMethodNotAllowed ||
		resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d %+v %v", resp.StatusCode, e, err)
	}
}

// TestSurvivesDatabaseRestart: while PostgreSQL is down, tracked elections keep answering from
// memory and streams stay open; afterwards the listener reconnects and pushes resume.
func TestSurvivesDatabaseRestart(t *testing.T) {
	tw := startWorker(t, false, nil)
	s := seed(t, contract.StatusActive)
	st, _, err := dial(t, tw.wsURL(s.election, tw.idp.token(t, "v", false)))
	if err != nil {
		t.Fatal(err)
	}
	st.next(2 * time.Second)

	restarted := make(chan error, 1)
	go func() { restarted <- pg.Restart(context.Background(), 2*time.Second) }()
	// Wait until the server refuses new sessions (it is shutting down or gone).
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, dsn)
		cancel()
		if err != nil {
			break
		}
		c.Close(context.Background())
		if time.Now().After(deadline) {
			t.Fatal("database never went down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := get(t, tw.srv.URL+"/api/v1/results/live/"+s.election, nil)
	r.expect(t, 200, `{"electionId":"`+s.election+`","currentVotes":9,"lastUpdated":"2026-11-01T19:45:10Z"}`+"\n")
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(get(t, tw.srv.URL+"/metrics", nil).body, "voting_results_notify_listener_up 1") {
		if time.Now().After(deadline) {
			t.Fatal("listener did not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		// The pool's connections died with the server; the first statements may still fail.
		if _, err := pool.Exec(context.Background(), `SELECT 1`); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pool did not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	start := time.Now()
	commit(t, s.election, s.carol, 1, true)
	m := st.nextOf(MsgVoteUpdate, 3*time.Second)
	if v, _ := candidateVotes(m, s.carol); v != 1 {
		t.Fatalf("update after restart %+v", m)
	}
	t.Logf("first update after the restart in %s", time.Since(start).Round(time.Millisecond))
}
