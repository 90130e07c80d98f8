package results

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/devstack/stacktest"
)

// One real PostgreSQL and one Redis for the package; each test seeds its own elections.
// Every answer read through get is checked against the contracts.
var (
	pool      *pgxpool.Pool
	pg        *devstack.Postgres
	dsn       string
	redisAddr string
	contracts *openapi.Contracts
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if contracts, err = openapi.Load(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: contracts:", err)
		return 1
	}
	// Missing binaries are a failure, not a skip: CI installs them with `make tools`.
	db, err := stacktest.StartPostgres(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: postgres:", err)
		return 1
	}
	defer db.Close()
	pg, pool, dsn = db.Postgres, db.Pool, db.DSN
	rport, err := devstack.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: free port:", err)
		return 1
	}
	rd, err := devstack.StartRedis(ctx, rport)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start redis:", err)
		return 1
	}
	defer rd.Stop()
	redisAddr = rd.Addr
	return m.Run()
}

var (
	generated = time.Date(2026, 11, 1, 20, 15, 0, 0, time.UTC)
	elecAt    = time.Date(2026, 11, 1, 18, 0, 0, 0, time.UTC)
	countAt1  = time.Date(2026, 11, 1, 19, 30, 0, 123456000, time.UTC)
	countAt2  = time.Date(2026, 11, 1, 19, 45, 10, 0, time.UTC)
)

type seeded struct {
	election                string
	jane, alice, bob, carol string
}

// seed creates an election with four candidates: Jane 5 votes, Alice 2, Bob 2, Carol no
// vote_counts row at all.
func seed(t *testing.T, status string) seeded {
	t.Helper()
	ctx := context.Background()
	s := seeded{election: uuid.NewString(), jane: uuid.NewString(), alice: uuid.NewString(), bob: uuid.NewString(), carol: uuid.NewString()}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO elections (id, title, status, start_date, end_date, updated_at)
		VALUES ($1, 'Presidential Election 2026', $2, '2026-11-01T18:00:00Z', '2026-11-01T20:00:00Z', $3)`, s.election, status, elecAt)
	exec(`INSERT INTO candidates (id, election_id, name, party) VALUES
		($1, $5, 'Jane Doe', 'Progressive Party'), ($2, $5, 'Bob Brown', ''), ($3, $5, 'Alice Smith', 'Conservative Party'),
		($4, $5, 'Carol White', 'Green Party')`, s.jane, s.bob, s.alice, s.carol, s.election)
	exec(`INSERT INTO vote_counts (election_id, candidate_id, votes, updated_at) VALUES
		($1, $2, 5, $5), ($1, $3, 2, $6), ($1, $4, 2, $5)`, s.election, s.jane, s.alice, s.bob, countAt1, countAt2)
	return s
}

func newTestServer(t *testing.T, store Store) *httptest.Server {
	t.Helper()
	s := NewServer(store, slog.New(slog.NewJSONHandler(io.Discard, nil)), 2*time.Second)
	s.now = func() time.Time { return generated }
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	code   int
	header http.Header
	body   string
}

func get(t *testing.T, url string, headers map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := contracts.Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func (r response) expect(t *testing.T, code int, body string) {
	t.Helper()
	if r.code != code || r.body != body {
		t.Fatalf("got %d %s\nwant %d %s", r.code, r.body, code, body)
	}
}

func TestResultsBody(t *testing.T) {
	s := seed(t, contract.StatusActive)
	srv := newTestServer(t, PGStore{Pool: pool})
	r := get(t, srv.URL+"/api/v1/results/"+strings.ToUpper(s.election), nil)
	want := `{"electionId":"` + s.election + `","electionTitle":"Presidential Election 2026","status":"ACTIVE","totals":[` +
		`{"candidateId":"` + s.jane + `","name":"Jane Doe","party":"Progressive Party","votes":5,"percentage":55.56},` +
		`{"candidateId":"` + s.alice + `","name":"Alice Smith","party":"Conservative Party","votes":2,"percentage":22.22},` +
		`{"candidateId":"` + s.bob + `","name":"Bob Brown","votes":2,"percentage":22.22},` +
		`{"candidateId":"` + s.carol + `","name":"Carol White","party":"Green Party","votes":0,"percentage":0}],` +
		`"totalVotes":9,"generatedAt":"2026-11-01T20:15:00Z"}` + "\n"
	r.expect(t, 200, want)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "public, max-age=5" {
		t.Fatalf("Cache-Control while ACTIVE = %q", cc)
	}
	// Version = total votes + newest updated_at (countAt2) in microseconds.
	if et, want := r.header.Get("ETag"), fmt.Sprintf(`"%s-v9.%d"`, s.election, countAt2.UnixMicro()); et != want {
		t.Fatalf("ETag = %s, want %s", et, want)
	}
	// The body decodes into the contract type with the same values.
	var decoded contract.ElectionResults
	if err := json.Unmarshal([]byte(r.body), &decoded); err != nil || decoded.TotalVotes != 9 || len(decoded.Totals) != 4 {
		t.Fatalf("decode: %+v, %v", decoded, err)
	}

	r = get(t, srv.URL+"/api/v1/results/"+s.election+"?includePercentages=false", nil)
	want = `{"electionId":"` + s.election + `","electionTitle":"Presidential Election 2026","status":"ACTIVE","totals":[` +
		`{"candidateId":"` + s.jane + `","name":"Jane Doe","party":"Progressive Party","votes":5},` +
		`{"candidateId":"` + s.alice + `","name":"Alice Smith","party":"Conservative Party","votes":2},` +
		`{"candidateId":"` + s.bob + `","name":"Bob Brown","votes":2},` +
		`{"candidateId":"` + s.carol + `","name":"Carol White","party":"Green Party","votes":0}],` +
		`"totalVotes":9,"generatedAt":"2026-11-01T20:15:00Z"}` + "\n"
	r.expect(t, 200, want)

	// The contract's boolean is true or false: nothing else is guessed at, an empty value
	// included.
	for _, q := range []string{"maybe", "", "1", "TRUE", "true&includePercentages=false"} {
		r = get(t, srv.URL+"/api/v1/results/"+s.election+"?includePercentages="+q, map[string]string{"X-Request-Id": "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"})
		r.expect(t, 400, `{"code":"INVALID_REQUEST","message":"includePercentages must be true or false","traceId":"7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"}`+"\n")
	}
}

func TestResultsWithoutVotesAndWithoutCandidates(t *testing.T) {
	ctx := context.Background()
	e, c := uuid.NewString(), uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO elections (id, title, status, start_date, end_date, updated_at)
		VALUES ($1, 'Empty one', 'ACTIVE', '2026-12-01T18:00:00Z', '2026-12-01T20:00:00Z', $2)`, e, elecAt); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, PGStore{Pool: pool})
	get(t, srv.URL+"/api/v1/results/"+e, nil).expect(t, 200,
		`{"electionId":"`+e+`","electionTitle":"Empty one","status":"ACTIVE","totals":[],"totalVotes":0,"generatedAt":"2026-11-01T20:15:00Z"}`+"\n")
	get(t, srv.URL+"/api/v1/results/live/"+e, nil).expect(t, 200,
		`{"electionId":"`+e+`","currentVotes":0,"lastUpdated":"2026-11-01T18:00:00Z"}`+"\n")

	if _, err := pool.Exec(ctx, `INSERT INTO candidates (id, election_id, name) VALUES ($1, $2, 'Solo Candidate')`, c, e); err != nil {
		t.Fatal(err)
	}
	get(t, srv.URL+"/api/v1/results/"+e, nil).expect(t, 200,
		`{"electionId":"`+e+`","electionTitle":"Empty one","status":"ACTIVE","totals":[{"candidateId":"`+c+
			`","name":"Solo Candidate","votes":0,"percentage":0}],"totalVotes":0,"generatedAt":"2026-11-01T20:15:00Z"}`+"\n")
}

// The contract's ElectionResults.status is ACTIVE or CLOSED: a scheduled election is answered
// 409 ELECTION_NOT_OPEN, a cancelled one (the contract's soft delete) 404 like a draft, on
// both public endpoints and never with a cacheable body.
func TestResultsOfElectionsNotOpen(t *testing.T) {
	srv := newTestServer(t, PGStore{Pool: pool})
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	for status, want := range map[string]struct {
		code int
		body string
	}{
		contract.StatusScheduled: {409, `{"code":"ELECTION_NOT_OPEN","message":"voting in election %s has not opened yet: results exist once it opens","traceId":"` + rid + `"}`},
		contract.StatusCancelled: {404, `{"code":"ELECTION_NOT_FOUND","message":"election %s not found","traceId":"` + rid + `"}`},
		contract.StatusDraft:     {404, `{"code":"ELECTION_NOT_FOUND","message":"election %s not found","traceId":"` + rid + `"}`},
	} {
		s := seed(t, status)
		for _, path := range []string{"/api/v1/results/", "/api/v1/results/live/"} {
			r := get(t, srv.URL+path+s.election, map[string]string{"X-Request-Id": rid})
			r.expect(t, want.code, fmt.Sprintf(want.body, s.election)+"\n")
			if cc, et := r.header.Get("Cache-Control"), r.header.Get("ETag"); cc != "no-store" || et != "" {
				t.Fatalf("%s %s: Cache-Control %q, ETag %q", status, path, cc, et)
			}
		}
	}
}

func TestLiveCount(t *testing.T) {
	s := seed(t, contract.StatusActive)
	srv := newTestServer(t, PGStore{Pool: pool})
	r := get(t, srv.URL+"/api/v1/results/live/"+s.election, nil)
	r.expect(t, 200, `{"electionId":"`+s.election+`","currentVotes":9,"lastUpdated":"2026-11-01T19:45:10Z"}`+"\n")
	if cc := r.header.Get("Cache-Control"); cc != "no-cache, no-store, must-revalidate" {
		t.Fatalf("Cache-Control = %q", cc)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	// A count update (what the processor does) is visible at once.
	if _, err := pool.Exec(context.Background(), `UPDATE vote_counts SET votes = votes + 3, updated_at = '2026-11-01T19:50:00.5Z'
		WHERE election_id = $1 AND candidate_id = $2`, s.election, s.bob); err != nil {
		t.Fatal(err)
	}
	get(t, srv.URL+"/api/v1/results/live/"+s.election, nil).expect(t, 200,
		`{"electionId":"`+s.election+`","currentVotes":12,"lastUpdated":"2026-11-01T19:50:00.5Z"}`+"\n")
}

func TestErrors(t *testing.T) {
	srv := newTestServer(t, PGStore{Pool: pool})
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	missing := uuid.NewString()
	for _, path := range []string{"/api/v1/results/", "/api/v1/results/live/"} {
		get(t, srv.URL+path+missing, map[string]string{"X-Request-Id": rid}).expect(t, 404,
			`{"code":"ELECTION_NOT_FOUND","message":"election `+missing+` not found","traceId":"`+rid+`"}`+"\n")
		get(t, srv.URL+path+"12345", map[string]string{"X-Request-Id": rid}).expect(t, 400,
			`{"code":"INVALID_ELECTION_ID","message":"electionId must be a UUID","traceId":"`+rid+`"}`+"\n")

		// A request id that is not a uuid is replaced by a fresh uuid.
		r := get(t, srv.URL+path+"not-a-uuid", map[string]string{"X-Request-Id": "abc"})
		var e contract.ErrorResponse
		if err := json.Unmarshal([]byte(r.body), &e); err != nil {
			t.Fatal(err)
		}
		if _, err := uuid.Parse(e.TraceID); r.code != 400 || e.Code != "INVALID_ELECTION_ID" || err != nil || len(e.TraceID) != 36 {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
			t.Fatalf("error headers: Content-Type %q Cache-Control %q", ct, cc)
		}
	}

	get(t, srv.URL+"/api/v1/nothing-here", map[string]string{"X-Request-Id": rid}).expect(t, 404,
		`{"code":"NOT_FOUND","message":"no such resource","traceId":"`+rid+`"}`+"\n")
}

func TestDatabaseDownIs503(t *testing.T) {
	dead, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	srv := newTestServer(t, PGStore{Pool: dead})
	rid := "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"
	id := uuid.NewString()
	for _, path := range []string{"/api/v1/results/", "/api/v1/results/live/"} {
		r := get(t, srv.URL+path+id, map[string]string{"X-Request-Id": rid})
		r.expect(t, 503, `{"code":"SERVICE_UNAVAILABLE","message":"results are temporarily unavailable, retry shortly","traceId":"`+rid+`"}`+"\n")
		if ra := r.header.Get("Retry-After"); ra != "1" {
			t.Fatalf("Retry-After = %q", ra)
		}
	}
	if r := get(t, srv.URL+"/healthz", nil); r.code != 503 {
		t.Fatalf("/healthz with database down = %d", r.code)
	}
}

func TestETagAndCacheControl(t *testing.T) {
	s := seed(t, contract.StatusActive)
	srv := newTestServer(t, PGStore{Pool: pool})
	url := srv.URL + "/api/v1/results/" + s.election
	first := get(t, url, nil)
	etag := first.header.Get("ETag")
	if first.code != 200 || etag == "" {
		t.Fatalf("first = %d, ETag %q", first.code, etag)
	}

	r := get(t, url, map[string]string{"If-None-Match": etag})
	r.expect(t, 304, "")
	if r.header.Get("ETag") != etag || r.header.Get("Cache-Control") != "public, max-age=5" {
		t.Fatalf("304 headers: ETag %q Cache-Control %q", r.header.Get("ETag"), r.header.Get("Cache-Control"))
	}
	if r := get(t, url, map[string]string{"If-None-Match": `"something-else"`}); r.code != 200 {
		t.Fatalf("non-matching If-None-Match = %d, want 200", r.code)
	}
	// The percentages flag changes the body, so it changes the tag.
	if r := get(t, url+"?includePercentages=false", map[string]string{"If-None-Match": etag}); r.code != 200 || r.header.Get("ETag") == etag {
		t.Fatalf("includePercentages=false with the default tag = %d, ETag %q", r.code, r.header.Get("ETag"))
	}

	// A new vote changes the version: the old tag no longer matches.
	if _, err := pool.Exec(context.Background(), `UPDATE vote_counts SET votes = votes + 1, updated_at = now()
		WHERE election_id = $1 AND candidate_id = $2`, s.election, s.jane); err != nil {
		t.Fatal(err)
	}
	r = get(t, url, map[string]string{"If-None-Match": etag})
	if r.code != 200 || r.header.Get("ETag") == etag || !strings.Contains(r.body, `"totalVotes":10`) {
		t.Fatalf("after a vote: %d ETag %q body %s", r.code, r.header.Get("ETag"), r.body)
	}
	etag = r.header.Get("ETag")

	// Closing the election changes status, cache lifetime and tag.
	if _, err := pool.Exec(context.Background(), `UPDATE elections SET status = 'CLOSED', updated_at = now() WHERE id = $1`, s.election); err != nil {
		t.Fatal(err)
	}
	r = get(t, url, map[string]string{"If-None-Match": etag})
	if r.code != 200 || !strings.Contains(r.body, `"status":"CLOSED"`) || r.header.Get("ETag") == etag {
		t.Fatalf("after close: %d ETag %q body %s", r.code, r.header.Get("ETag"), r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Fatalf("Cache-Control when CLOSED = %q", cc)
	}
	get(t, url, map[string]string{"If-None-Match": r.header.Get("ETag")}).expect(t, 304, "")
}

func TestHealthAndMetrics(t *testing.T) {
	s := seed(t, contract.StatusActive)
	srv := newTestServer(t, PGStore{Pool: pool})
	get(t, srv.URL+"/healthz", nil).expect(t, 200, "ok\n")
	get(t, srv.URL+"/api/v1/results/"+s.election, nil)
	get(t, srv.URL+"/api/v1/results/live/"+s.election, nil)
	get(t, srv.URL+"/api/v1/results/live/bad", nil)
	r := get(t, srv.URL+"/metrics", nil)
	for _, want := range []string{
		`voting_results_http_requests_total{code="200",endpoint="GET /api/v1/results/{electionId}"} 1`,
		`voting_results_http_requests_total{code="200",endpoint="GET /api/v1/results/live/{electionId}"} 1`,
		`voting_results_http_requests_total{code="400",endpoint="GET /api/v1/results/live/{electionId}"} 1`,
		`voting_results_http_requests_total{code="200",endpoint="GET /healthz"} 1`,
		`voting_results_http_request_duration_seconds_count{endpoint="GET /api/v1/results/live/{electionId}"} 2`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestInternalVoteStatusReadsTheVotesRow(t *testing.T) {
	ctx := context.Background()
	sd := seed(t, "ACTIVE")
	electionID, candidateID := sd.election, sd.jane
	voteID := uuid.Must(uuid.NewV7()).String()
	at := time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC)
	if _, err := pool.Exec(ctx, `INSERT INTO votes (id, election_id, candidate_id, user_id, accepted_at) VALUES ($1, $2, $3, 'auth0|viewer-7', $4)`,
		voteID, electionID, candidateID, at); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(PGStore{Pool: pool}, quietLog(), 2*time.Second, WithVoteStatus(PGStore{Pool: pool})).Handler())
	defer srv.Close()
	get := func(user string) (int, voteStatus) {
		resp, err := http.Get(srv.URL + "/internal/v1/vote-status/" + electionID + "/" + url.PathEscape(user))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st voteStatus
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st
	}
	code, st := get("auth0|viewer-7")
	if code != 200 || !st.HasVoted || st.VoteID != voteID || st.Timestamp == nil || !st.Timestamp.Equal(at) || st.UserID != "auth0|viewer-7" {
		t.Fatalf("voter: %d %+v", code, st)
	}
	code, st = get("auth0|nobody")
	if code != 200 || st.HasVoted || st.VoteID != "" || st.Timestamp != nil {
		t.Fatalf("non-voter: %d %+v", code, st)
	}
	resp, err := http.Get(srv.URL + "/internal/v1/vote-status/not-a-uuid/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad election id: %d", resp.StatusCode)
	}
}
