package results

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
)

func TestPercentage(t *testing.T) {
	cases := []struct {
		votes, total int64
		want         float64
	}{
		{0, 0, 0},
		{5, 0, 0}, // inconsistent input still gives no NaN/Inf
		{1, 3, 33.33},
		{2, 3, 66.67},
		{1, 8, 12.5},
		{1, 6, 16.67},
		{5, 9, 55.56},
		{1, 1, 100},
		{1, 200000, 0}, // 0.0005 % rounds to 0.00
		{1, 20000, 0.01},
		{1250000, 2380000, 52.52},
	}
	for _, c := range cases {
		if got := percentage(c.votes, c.total); got != c.want {
			t.Errorf("percentage(%d, %d) = %v, want %v", c.votes, c.total, got, c.want)
		}
	}
}

func TestBuildResultsOrderAndShape(t *testing.T) {
	ec := ElectionCounts{
		ElectionID: "550e8400-e29b-41d4-a716-446655440000", Title: "Final", Status: contract.StatusActive,
		Candidates: []CandidateCount{
			{ID: "c3", Name: "Zed", Votes: 1},
			{ID: "c2", Name: "Bob", Votes: 2},
			{ID: "c1", Name: "Alice", Votes: 2, Party: "P"},
			{ID: "c0", Name: "Alice", Votes: 2}, // same name and votes: id decides
			{ID: "c4", Name: "Amy", Votes: 0},
		},
	}
	now := time.Date(2026, 11, 1, 21, 15, 0, 0, time.FixedZone("CET", 3600))
	got := buildResults(ec, true, now)
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"electionId":"550e8400-e29b-41d4-a716-446655440000","electionTitle":"Final","status":"ACTIVE","totals":[` +
		`{"candidateId":"c0","name":"Alice","votes":2,"percentage":28.57},` +
		`{"candidateId":"c1","name":"Alice","party":"P","votes":2,"percentage":28.57},` +
		`{"candidateId":"c2","name":"Bob","votes":2,"percentage":28.57},` +
		`{"candidateId":"c3","name":"Zed","votes":1,"percentage":14.29},` +
		`{"candidateId":"c4","name":"Amy","votes":0,"percentage":0}],` +
		`"totalVotes":7,"generatedAt":"2026-11-01T20:15:00Z"}`
	if string(b) != want {
		t.Fatalf("results\n got %s\nwant %s", b, want)
	}
	if ec.Candidates[0].ID != "c3" {
		t.Fatal("buildResults reordered its input")
	}

	b, _ = json.Marshal(buildResults(ec, false, now))
	if strings.Contains(string(b), "percentage") {
		t.Fatalf("percentages present although disabled: %s", b)
	}
	b, _ = json.Marshal(buildResults(ElectionCounts{ElectionID: "e", Title: "t", Status: contract.StatusClosed}, true, now))
	if want := `{"electionId":"e","electionTitle":"t","status":"CLOSED","totals":[],"totalVotes":0,"generatedAt":"2026-11-01T20:15:00Z"}`; string(b) != want {
		t.Fatalf("empty election\n got %s\nwant %s", b, want)
	}
}

func TestResultsETag(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 20, 0, 0, 0, time.UTC)
	ec := ElectionCounts{ElectionID: "e1", UpdatedAt: t0, Candidates: []CandidateCount{
		{ID: "a", Votes: 3, UpdatedAt: t0.Add(time.Second)},
		{ID: "b", Votes: 4, UpdatedAt: t0.Add(2 * time.Second)},
		{ID: "c"}, // no counts row yet
	}}
	want := `"e1-v7.` + "1793563202000000" + `"`
	if got := resultsETag(ec, true); got != want {
		t.Fatalf("etag = %s, want %s", got, want)
	}
	if got := resultsETag(ec, false); got != `"e1-v7.1793563202000000-np"` {
		t.Fatalf("etag without percentages = %s", got)
	}
	ec.Candidates[0].Votes++
	if resultsETag(ec, true) == want {
		t.Fatal("etag unchanged after a count changed")
	}
	ec.Candidates[0].Votes--
	ec.UpdatedAt = t0.Add(time.Hour) // e.g. the election was closed
	if resultsETag(ec, true) == want {
		t.Fatal("etag unchanged after the election changed")
	}
}

func TestETagMatches(t *testing.T) {
	const tag = `"e1-v7.5"`
	for inm, want := range map[string]bool{
		`"e1-v7.5"`:      true,
		`W/"e1-v7.5"`:    true,
		`"x", "e1-v7.5"`: true,
		`*`:              true,
		`"e1-v7.6"`:      false,
		`e1-v7.5`:        false,
		`"e1-v7.5-np"`:   false,
		`"a","b"`:        false,
	} {
		if got := etagMatches(inm, tag); got != want {
			t.Errorf("etagMatches(%q) = %v, want %v", inm, got, want)
		}
	}
}

// The contract's ElectionResults.status is ACTIVE or CLOSED: every other status is refused.
func TestStatusPolicies(t *testing.T) {
	if cacheControl(contract.StatusActive) != "public, max-age=5" || cacheControl(contract.StatusClosed) != "public, max-age=300" {
		t.Fatal("unexpected Cache-Control policy")
	}
	for status, want := range map[string]string{
		contract.StatusActive: "", contract.StatusClosed: "", contract.StatusScheduled: contract.CodeElectionNotOpen,
		contract.StatusDraft: contract.CodeElectionNotFound, contract.StatusCancelled: contract.CodeElectionNotFound,
	} {
		if got := resultsRefusal(status); got != want {
			t.Errorf("resultsRefusal(%s) = %q, want %q", status, got, want)
		}
	}
	if streamable(contract.StatusDraft) || streamable(contract.StatusCancelled) || !streamable(contract.StatusActive) || !streamable(contract.StatusClosed) ||
		!streamable(contract.StatusScheduled) {
		t.Fatal("unexpected stream policy")
	}
}

func TestLiveCountFallsBackToElectionUpdate(t *testing.T) {
	el := time.Date(2026, 11, 1, 19, 0, 0, 0, time.UTC)
	lt := LiveTotal{ElectionID: "e", ElectionUpdatedAt: el}
	if got := liveCount(lt); got.LastUpdated != el || got.CurrentVotes != 0 {
		t.Fatalf("live count without votes = %+v", got)
	}
	lt.Votes, lt.CountsUpdatedAt = 9, el.Add(time.Minute)
	if got := liveCount(lt); !got.LastUpdated.Equal(el.Add(time.Minute)) || got.CurrentVotes != 9 {
		t.Fatalf("live count = %+v", got)
	}
}

func TestCanonicalUUIDAndTraceID(t *testing.T) {
	id := "550E8400-E29B-41D4-A716-446655440000"
	if got, ok := contract.CanonicalUUID(id); !ok || got != strings.ToLower(id) {
		t.Fatalf("contract.CanonicalUUID(%q) = %q, %v", id, got, ok)
	}
	for _, bad := range []string{"", "123", "urn:uuid:550e8400-e29b-41d4-a716-446655440000",
		"{550e8400-e29b-41d4-a716-446655440000}", "550e8400e29b41d4a716446655440000", "550e8400-e29b-41d4-a716-44665544000g"} {
		if _, ok := contract.CanonicalUUID(bad); ok {
			t.Errorf("contract.CanonicalUUID(%q) accepted", bad)
		}
	}
	if got := contract.TraceID("7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6"); got != "7d3f9a2e-1b4c-4d5e-8f60-718293a4b5c6" {
		t.Fatalf("traceID kept = %q", got)
	}
	a, b := contract.TraceID("not-a-uuid"), contract.TraceID("")
	if _, err := uuid.Parse(a); err != nil || a == b {
		t.Fatalf("traceID for invalid ids = %q, %q", a, b)
	}
}

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	cfg, err := LoadConfig(env(map[string]string{"RESULTS_DATABASE_URL": "postgres://db"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{DatabaseURL: "postgres://db", ListenAddr: "127.0.0.1:8082", DBTimeout: 2 * time.Second,
		PollInterval: time.Second, StreamInterval: time.Second, HeartbeatInterval: 15 * time.Second,
		MaxStreamsPerViewer: 5, MaxStreams: 50000, StreamOrigins: []string{"*"}}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("defaults = %+v", cfg)
	}
	if cfg.AuthEnabled() {
		t.Fatal("auth enabled without issuer")
	}
	if _, err := LoadConfig(env(nil)); err == nil || !strings.Contains(err.Error(), "RESULTS_DATABASE_URL is required") {
		t.Fatalf("missing database url: %v", err)
	}
	if _, err := LoadConfig(env(map[string]string{"RESULTS_DATABASE_URL": "x", "RESULTS_DB_TIMEOUT": "-1s"})); err == nil {
		t.Fatal("negative timeout accepted")
	}
	cfg, err = LoadConfig(env(map[string]string{"RESULTS_DATABASE_URL": "x", "RESULTS_JWT_ISSUER": "https://tenant.eu.auth0.com/",
		"RESULTS_JWT_AUDIENCE": "https://api", "RESULTS_REDIS_ADDR": "127.0.0.1:6379", "RESULTS_STREAM_ORIGINS": "tv.example.com, *.studio.example"}))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.AuthEnabled() || cfg.JWKSURL != "https://tenant.eu.auth0.com/.well-known/jwks.json" || cfg.RedisAddr != "127.0.0.1:6379" ||
		!reflect.DeepEqual(cfg.StreamOrigins, []string{"tv.example.com", "*.studio.example"}) {
		t.Fatalf("auth config = %+v", cfg)
	}
	for name, m := range map[string]map[string]string{
		"issuer without audience": {"RESULTS_JWT_ISSUER": "https://i/"},
		"bad interval":            {"RESULTS_STREAM_INTERVAL": "soon"},
		"zero poll":               {"RESULTS_POLL_INTERVAL": "0s"},
		"limit 0":                 {"RESULTS_MAX_STREAMS_PER_VIEWER": "0"},
		"limit not a number":      {"RESULTS_MAX_STREAMS": "many"},
	} {
		m["RESULTS_DATABASE_URL"] = "x"
		if _, err := LoadConfig(env(m)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNotifiedElections(t *testing.T) {
	a, b := "550e8400-e29b-41d4-a716-446655440000", "660e8400-e29b-41d4-a716-446655440000"
	cases := []struct {
		payload string
		ids     []string
		ok      bool
	}{
		{`{"electionIds":["` + a + `","` + b + `"]}`, []string{a, b}, true},
		// The processor's payload may grow delta fields: they are ignored.
		{`{"electionIds":["` + a + `"],"deltas":{"` + a + `":{"x":3}}}`, []string{a}, true},
		{`{"electionId":"` + strings.ToUpper(a) + `"}`, []string{a}, true},
		{"  " + a + "\n", []string{a}, true},
		{`{"id":"` + b + `"}`, []string{b}, true},
		{`not json`, nil, false},
		{`{"electionIds":[]}`, nil, false},
		{`{"electionIds":["nope"]}`, nil, false},
	}
	for _, c := range cases {
		ids, ok := notifiedElections(c.payload)
		if ok != c.ok || !reflect.DeepEqual(ids, c.ids) {
			t.Errorf("notifiedElections(%q) = %v, %v; want %v, %v", c.payload, ids, ok, c.ids, c.ok)
		}
	}
}

func TestBuildStatistics(t *testing.T) {
	h := func(hh int) time.Time { return time.Date(2026, 11, 1, hh, 0, 0, 0, time.UTC) }
	d := StatsData{
		Counts: ElectionCounts{ElectionID: "e", Candidates: []CandidateCount{
			{ID: "a", Name: "Ann", Votes: 60}, {ID: "b", Name: "Ben", Votes: 40}}},
		EligibleVoters: 300,
		Hourly:         []HourCount{{h(18), 20}, {h(19), 40}, {h(20), 40}},
		Regional: []RegionVotes{{"eu-west-1", "a", 10}, {"eu-west-1", "b", 20}, {"", "a", 5}, {"us-east-1", "a", 40},
			{"us-east-1", "b", 20}, {"UNKNOWN", "b", 5}},
		// 100 votes, 4530.04 s after the opening in all: 45.3004 s each.
		SinceOpenMs: 4_530_040, StatsVotes: 100,
	}
	now := time.Date(2026, 11, 1, 21, 0, 0, 0, time.UTC)
	b, _ := json.Marshal(buildStatistics(d, true, true, now))
	want := `{"electionId":"e","totalVotes":100,"totalEligibleVoters":300,"turnoutPercentage":33.33,"candidateStats":[` +
		`{"candidateId":"a","name":"Ann","votes":60,"percentage":60},{"candidateId":"b","name":"Ben","votes":40,"percentage":40}],` +
		`"votesPerHour":[{"hour":"2026-11-01T18:00:00Z","count":20},{"hour":"2026-11-01T19:00:00Z","count":40},{"hour":"2026-11-01T20:00:00Z","count":40}],` +
		`"regionalBreakdown":[` +
		`{"region":"us-east-1","totalVotes":60,"candidates":[{"candidateId":"a","votes":40},{"candidateId":"b","votes":20}]},` +
		`{"region":"eu-west-1","totalVotes":30,"candidates":[{"candidateId":"a","votes":10},{"candidateId":"b","votes":20}]},` +
		`{"region":"UNKNOWN","totalVotes":10,"candidates":[{"candidateId":"a","votes":5},{"candidateId":"b","votes":5}]}],` +
		`"peakVotingTime":"2026-11-01T19:00:00Z","averageVotingTime":45.3,"generatedAt":"2026-11-01T21:00:00Z"}`
	if string(b) != want {
		t.Fatalf("statistics\n got %s\nwant %s", b, want)
	}
	// A candidate without votes in a region is listed there with 0.
	d.Regional = []RegionVotes{{"eu-west-1", "b", 3}}
	got := buildStatistics(d, false, true, now).RegionalBreakdown
	if len(got) != 1 || !reflect.DeepEqual(got[0].Candidates, []RegionCandidate{{"a", 0}, {"b", 3}}) {
		t.Fatalf("region with one candidate: %+v", got)
	}
	// Not asked for: absent. Asked for but empty: []. No votes: no peak, no average, turnout 0
	// without electorate.
	b, _ = json.Marshal(buildStatistics(StatsData{Counts: ElectionCounts{ElectionID: "e"}}, false, true, now))
	if want := `{"electionId":"e","totalVotes":0,"totalEligibleVoters":0,"turnoutPercentage":0,"candidateStats":[],"regionalBreakdown":[],"generatedAt":"2026-11-01T21:00:00Z"}`; string(b) != want {
		t.Fatalf("empty statistics\n got %s\nwant %s", b, want)
	}
}
