package processor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
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
		SQSRegion: "us-east-1", MetricsAddr: "127.0.0.1:9091", Receivers: 4, BatchSize: 10,
		WaitTime: 20 * time.Second, BackoffMin: 200 * time.Millisecond, BackoffMax: 30 * time.Second,
		DBTimeout: 10 * time.Second,
	}
	if cfg != want {
		t.Fatalf("config = %+v\nwant     %+v", cfg, want)
	}
}

func TestLoadConfigOverridesAndErrors(t *testing.T) {
	cfg, err := LoadConfig(env(map[string]string{
		"PROCESSOR_DATABASE_URL": "postgres://db", "PROCESSOR_QUEUE_URL": "http://q/1/votes",
		"PROCESSOR_SQS_ENDPOINT": "http://127.0.0.1:9324", "PROCESSOR_RECEIVERS": "2",
		"PROCESSOR_BATCH_SIZE": "5", "PROCESSOR_WAIT_TIME": "1s", "PROCESSOR_VISIBILITY_TIMEOUT": "3s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SQSEndpoint != "http://127.0.0.1:9324" || cfg.Receivers != 2 || cfg.BatchSize != 5 ||
		cfg.WaitTime != time.Second || cfg.VisibilityTimeout != 3*time.Second {
		t.Fatalf("overrides not applied: %+v", cfg)
	}

	_, err = LoadConfig(env(map[string]string{
		"PROCESSOR_BATCH_SIZE": "11", "PROCESSOR_WAIT_TIME": "21s", "PROCESSOR_RECEIVERS": "0",
	}))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"PROCESSOR_DATABASE_URL is required", "PROCESSOR_QUEUE_URL is required",
		"PROCESSOR_BATCH_SIZE must be 1..10", "PROCESSOR_WAIT_TIME must be whole seconds", "PROCESSOR_RECEIVERS must be 1..256"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
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
		Region: "eu-west-1", RequestID: "attr-rid", AcceptedAt: time.Date(2026, 11, 1, 20, 15, 0, 0, time.UTC)}
	if v != want {
		t.Fatalf("vote = %+v\nwant   %+v", v, want)
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
