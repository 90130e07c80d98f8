package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tvvote/voting/contract"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{
		"PROCESSOR_DATABASE_URL": "postgres://x@127.0.0.1/db",
		"PROCESSOR_QUEUE_URL":    "http://127.0.0.1:9324/000000000000/votes",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		DatabaseURL: "postgres://x@127.0.0.1/db", QueueURL: "http://127.0.0.1:9324/000000000000/votes",
		SQSRegion: "us-east-1", MetricsAddr: "127.0.0.1:9091", Receivers: 16, ReceiveMaxMessages: 10,
		WaitTime: 20 * time.Second, BatchMaxMessages: 1000, BatchMaxWait: 50 * time.Millisecond,
		Writers: 2, Deleters: 16, PoisonRetryDelay: 5 * time.Second,
		BackoffMin: 200 * time.Millisecond, BackoffMax: 30 * time.Second,
		DBTimeout: 10 * time.Second, ShutdownTimeout: 25 * time.Second, QueueStatsInterval: 15 * time.Second,
		ReconcileInterval: 10 * time.Second, ReconcileClosedWindow: 24 * time.Hour, DedupTTL: 7 * 24 * time.Hour,
	}
	if cfg != want {
		t.Fatalf("config = %+v\nwant     %+v", cfg, want)
	}
}

func TestLoadConfigOverridesAndErrors(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{
		"PROCESSOR_DATABASE_URL": "postgres://db", "PROCESSOR_QUEUE_URL": "http://q/1/votes",
		"PROCESSOR_SQS_ENDPOINT": "http://127.0.0.1:9324", "PROCESSOR_RECEIVERS": "2",
		"PROCESSOR_RECEIVE_MAX_MESSAGES": "5", "PROCESSOR_WAIT_TIME": "1s", "PROCESSOR_VISIBILITY_TIMEOUT": "3s",
		"PROCESSOR_BATCH_MAX_MESSAGES": "250", "PROCESSOR_BATCH_MAX_WAIT": "10ms", "PROCESSOR_WRITERS": "3",
		"PROCESSOR_REDIS_ADDR": "rediss://:secret@cache:6380/0", "PROCESSOR_RECONCILE_REGION": "eu-west-1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SQSEndpoint != "http://127.0.0.1:9324" || cfg.Receivers != 2 || cfg.ReceiveMaxMessages != 5 ||
		cfg.WaitTime != time.Second || cfg.VisibilityTimeout != 3*time.Second || cfg.BatchMaxMessages != 250 ||
		cfg.BatchMaxWait != 10*time.Millisecond || cfg.Writers != 3 || cfg.RedisAddr != "rediss://:secret@cache:6380/0" ||
		cfg.ReconcileRegion != "eu-west-1" {
		t.Fatalf("overrides not applied: %+v", cfg)
	}

	_, err = LoadConfig(env(map[string]string{
		"PROCESSOR_RECEIVE_MAX_MESSAGES": "11", "PROCESSOR_WAIT_TIME": "21s", "PROCESSOR_RECEIVERS": "0",
		"PROCESSOR_BATCH_MAX_MESSAGES": "0", "PROCESSOR_REDIS_ADDR": "http://:pw@x",
	}))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"PROCESSOR_DATABASE_URL is required", "PROCESSOR_QUEUE_URL is required",
		"PROCESSOR_RECEIVE_MAX_MESSAGES must be 1..10", "PROCESSOR_WAIT_TIME must be whole seconds",
		"PROCESSOR_RECEIVERS must be 1..256", "PROCESSOR_BATCH_MAX_MESSAGES must be 1..10000",
		`PROCESSOR_REDIS_ADDR "http://:xxxxx@x"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// The skeleton's variable is refused by name, not silently ignored.
	if _, err := LoadConfig(env(map[string]string{"PROCESSOR_BATCH_SIZE": "10"})); err == nil ||
		!strings.Contains(err.Error(), "PROCESSOR_BATCH_SIZE is gone") {
		t.Fatalf("stale PROCESSOR_BATCH_SIZE error = %v", err)
	}
	// replay-dlq needs no database.
	if _, err := LoadReplayConfig(env(map[string]string{"PROCESSOR_QUEUE_URL": "http://q/1/votes"})); err != nil {
		t.Fatalf("replay config: %v", err)
	}
	if _, err := LoadConfig(env(map[string]string{"PROCESSOR_WAIT_TIME": "soon"})); err == nil ||
		!strings.Contains(err.Error(), `PROCESSOR_WAIT_TIME: "soon" is not a duration`) {
		t.Fatalf("bad duration error = %v", err)
	}
}

const (
	voteID     = "0b7c8a1e-2a41-4a53-9d3c-6f1e2b3c4d5e"
	electionID = "550e8400-e29b-41d4-a716-446655440000"
	candID     = "660e8400-e29b-41d4-a716-446655440000"
)

func msg(body string, attrs map[string]string) types.Message {
	m := types.Message{Body: aws.String(body), MessageId: aws.String("m1"), MessageAttributes: map[string]types.MessageAttributeValue{}}
	for k, v := range attrs {
		m.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return m
}

func TestParseVote(t *testing.T) {
	body := `{"voteId":"` + strings.ToUpper(voteID) + `","electionId":"` + electionID + `","candidateId":"` + candID +
		`","userId":"auth0|42","region":"eu-west-1","requestId":"body-rid","acceptedAt":"2026-11-01T20:15:00Z","futureField":1}`
	v, err := parseVote(msg(body, map[string]string{"x-request-id": "attr-rid", "region": "us-east-1"}))
	if err != nil {
		t.Fatal(err)
	}
	want := vote{ID: voteID, ElectionID: electionID, CandidateID: candID, UserID: "auth0|42",
		Region: "eu-west-1", HomeRegion: "eu-west-1", RequestID: "attr-rid", AcceptedAt: time.Date(2026, 11, 1, 20, 15, 0, 0, time.UTC)}
	if v != want {
		t.Fatalf("vote = %+v\nwant   %+v", v, want)
	}
	// A vote served in one region and admitted in the viewer's home region carries both.
	v, err = parseVote(msg(strings.Replace(body, `"region":"eu-west-1",`, `"region":"eu-west-1","homeRegion":"us-east-1",`, 1), nil))
	if err != nil || v.Region != "eu-west-1" || v.HomeRegion != "us-east-1" {
		t.Fatalf("homeRegion: region %q home %q, %v", v.Region, v.HomeRegion, err)
	}

	// Without attributes the body's requestId is used; without body region the attribute's.
	body2 := strings.Replace(body, `"region":"eu-west-1",`, "", 1)
	v, err = parseVote(msg(body2, map[string]string{"region": "us-east-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if v.RequestID != "body-rid" || v.Region != "us-east-1" {
		t.Fatalf("fallbacks: requestId %q region %q", v.RequestID, v.Region)
	}
}

func TestParseVoteRejectsPoison(t *testing.T) {
	good := map[string]string{"voteId": voteID, "electionId": electionID, "candidateId": candID, "userId": "u1", "acceptedAt": "2026-11-01T20:15:00Z"}
	build := func(change map[string]string) string {
		parts := []string{}
		for k, v := range good {
			if nv, ok := change[k]; ok {
				if nv == "" {
					continue
				}
				v = nv
			}
			parts = append(parts, `"`+k+`":"`+v+`"`)
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	cases := map[string]string{
		"garbage":          "not json at all",
		"json array":       "[1,2]",
		"empty object":     "{}",
		"bad vote id":      build(map[string]string{"voteId": "123"}),
		"urn vote id":      build(map[string]string{"voteId": "urn:uuid:" + voteID}),
		"bad election id":  build(map[string]string{"electionId": "550e8400-e29b-41d4-a716-44665544000Z"}),
		"bad candidate id": build(map[string]string{"candidateId": "x"}),
		"missing user":     build(map[string]string{"userId": ""}),
		"long user":        build(map[string]string{"userId": strings.Repeat("u", 257)}),
		"missing accepted": build(map[string]string{"acceptedAt": ""}),
		"NUL in user":      build(map[string]string{"userId": `a\u0000b`}),
	}
	for name, body := range cases {
		if _, err := parseVote(msg(body, nil)); !errors.Is(err, errPoison) {
			t.Errorf("%s: err = %v, want poison", name, err)
		}
	}
	if _, err := parseVote(types.Message{}); !errors.Is(err, errPoison) {
		t.Errorf("nil body: err = %v, want poison", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	cases := []struct {
		attempt int
		r       float64
		want    time.Duration
	}{
		{1, 0, 50 * time.Millisecond},
		{1, 0.999999, 99999950 * time.Nanosecond},
		{2, 0, 100 * time.Millisecond},
		{3, 0.5, 300 * time.Millisecond},   // d=400ms: 200 + 100
		{5, 0, 500 * time.Millisecond},     // d=1600ms capped at 1s
		{60, 0.5, 750 * time.Millisecond},  // no overflow for large attempts
		{1000, 1, 1000 * time.Millisecond}, // upper bound is hi
	}
	for _, c := range cases {
		if got := backoffDelay(c.attempt, lo, hi, c.r); got != c.want {
			t.Errorf("backoffDelay(%d, r=%v) = %s, want %s", c.attempt, c.r, got, c.want)
		}
	}
}

func TestNotifyPayloadsSplitBelowLimit(t *testing.T) {
	var deltas []contract.CountDelta
	for i := range 300 {
		e := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i/3) // 100 elections, 3 candidates each
		deltas = append(deltas, contract.CountDelta{ElectionID: e, CandidateID: fmt.Sprintf("%08d-1111-4000-8000-000000000000", i),
			Delta: int64(i + 1), Votes: 1_000_000_000 + int64(i)})
	}
	payloads, err := notifyPayloads(deltas)
	if err != nil {
		t.Fatal(err)
	}
	if len(payloads) < 2 {
		t.Fatalf("%d payloads for 300 deltas, want a split", len(payloads))
	}
	var got []contract.CountDelta
	for _, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload of %d bytes exceeds the NOTIFY limit", len(p))
		}
		var c contract.CountsChanged
		if err := json.Unmarshal([]byte(p), &c); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.ElectionIDs, electionsOf(c.Deltas)) {
			t.Fatalf("electionIds %v do not match the deltas' elections", c.ElectionIDs)
		}
		got = append(got, c.Deltas...)
	}
	if !slices.Equal(got, deltas) {
		t.Fatal("deltas lost or reordered across payloads")
	}
	one, err := notifyPayloads(deltas[:1])
	if err != nil || len(one) != 1 {
		t.Fatalf("one delta: %v %v", one, err)
	}
}

func TestParseRedrivePolicy(t *testing.T) {
	for _, s := range []string{
		`{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:votes-dlq","maxReceiveCount":"5"}`, // AWS
		`{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:votes-dlq","maxReceiveCount":5}`,   // ElasticMQ
	} {
		p, err := parseRedrivePolicy(s)
		if err != nil || p.maxReceiveCount != 5 || p.arn != "arn:aws:sqs:us-east-1:000000000000:votes-dlq" {
			t.Errorf("%s: %+v %v", s, p, err)
		}
	}
	for _, s := range []string{"", "{}", `{"deadLetterTargetArn":"x"}`, "nope"} {
		if _, err := parseRedrivePolicy(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestIsDataError(t *testing.T) {
	cases := map[string]bool{"23514": true, "22P02": true, "23505": true, "08006": false, "57P01": false, "40P01": false, "P0001": false}
	for code, want := range cases {
		if got := isDataError(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})); got != want {
			t.Errorf("isDataError(%s) = %v, want %v", code, got, want)
		}
	}
	if isDataError(errors.New("connection refused")) {
		t.Error("a plain error is not a data error")
	}
}

func TestLeasesDueAndExtended(t *testing.T) {
	l := newLeases()
	a, b := &inbound{}, &inbound{}
	t0 := time.Unix(1000, 0)
	l.add([]*inbound{a}, t0, 10*time.Second)
	l.add([]*inbound{b}, t0.Add(4*time.Second), 10*time.Second)
	if due := l.due(t0.Add(6*time.Second), 5*time.Second); len(due) != 1 || due[0] != a {
		t.Fatalf("due = %v, want only a", due)
	}
	l.extended([]*inbound{a}, nil, t0.Add(20*time.Second))
	if due := l.due(t0.Add(10*time.Second), 5*time.Second); len(due) != 1 || due[0] != b {
		t.Fatalf("after extending a, due = %v, want only b", due)
	}
	l.extended([]*inbound{b}, []*inbound{b}, t0.Add(20*time.Second)) // failed: no longer ours
	l.remove([]*inbound{a})
	if n := len(l.all()); n != 0 {
		t.Fatalf("%d leases left", n)
	}
}

func TestGateBlocksUntilOpened(t *testing.T) {
	g := newGate(prometheus.NewGauge(prometheus.GaugeOpts{Name: "up"}))
	if !g.wait(context.Background()) {
		t.Fatal("an open gate blocked")
	}
	g.close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if g.wait(ctx) {
		t.Fatal("a closed gate let a receiver through")
	}
	done := make(chan bool)
	go func() { done <- g.wait(context.Background()) }()
	g.open()
	if !<-done {
		t.Fatal("opening the gate did not release the waiter")
	}
}

func TestReceiverAgesReportTheOldest(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "age"})
	a := newReceiverAges(3, g)
	now := time.Unix(1000, 0)
	a.set(0, now.Add(-2*time.Second), now)
	a.set(1, now.Add(-5*time.Second), now)
	a.set(2, time.Time{}, now)
	if v := testutil.ToFloat64(g); v != 5 {
		t.Fatalf("gauge = %v, want 5", v)
	}
	// Nothing received for 10 s (paused receivers): the age keeps growing.
	a.refresh(now.Add(10 * time.Second))
	if v := testutil.ToFloat64(g); v != 15 {
		t.Fatalf("gauge = %v, want 15", v)
	}
	a.set(1, time.Time{}, now) // that receiver's queue drained
	if v := testutil.ToFloat64(g); v != 2 {
		t.Fatalf("gauge = %v, want 2", v)
	}
}
