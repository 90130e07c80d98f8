package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/devstack/stacktest"
)

// Real PostgreSQL and ElasticMQ, shared by all tests of the package. Each test isolates itself
// with its own queue and its own election ids.
var (
	pgsrv *devstack.Postgres
	pool  *pgxpool.Pool
	mq    *devstack.ElasticMQ
	sqsc  *sqs.Client
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Missing binaries are a failure, not a skip: CI installs them with `make tools`.
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "FAIL: %s: %v\n", what, err)
		return 1
	}
	db, err := stacktest.StartPostgres(ctx)
	if err != nil {
		return fail("postgres", err)
	}
	defer db.Close()
	pgsrv, pool = db.Postgres, db.Pool
	mqPort, err := devstack.FreePort()
	if err != nil {
		return fail("free port", err)
	}
	mq, err = devstack.StartElasticMQ(ctx, mqPort)
	if err != nil {
		return fail("start elasticmq", err)
	}
	defer mq.Stop()
	if binDir, err = os.MkdirTemp("", "processor-bin-"); err != nil {
		return fail("temp dir", err)
	}
	defer os.RemoveAll(binDir)
	sqsc, err = NewSQSClient(ctx, Config{SQSEndpoint: mq.Endpoint, SQSRegion: "us-east-1"})
	if err != nil {
		return fail("sqs client", err)
	}
	return m.Run()
}

// fixture is one election with two candidates, plus a queue of its own.
type fixture struct {
	election, candA, candB string
	queueURL               string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	ctx := context.Background()
	f := fixture{election: uuid.NewString(), candA: uuid.NewString(), candB: uuid.NewString()}
	_, err := pool.Exec(ctx, `
		INSERT INTO elections (id, title, status, start_date, end_date)
		VALUES ($1, 'Test election', 'ACTIVE', now() - interval '1 hour', now() + interval '1 hour')`, f.election)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO candidates (id, election_id, name, party) VALUES ($1, $3, 'Alice A', 'P1'), ($2, $3, 'Bob B', 'P2')`,
		f.candA, f.candB, f.election)
	if err != nil {
		t.Fatal(err)
	}
	// A short visibility timeout so that messages the processor leaves alone come back within
	// the test; queue names may only hold [A-Za-z0-9_-].
	name := "t-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20]
	out, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{"VisibilityTimeout": "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.queueURL = aws.ToString(out.QueueUrl)
	return f
}

func (f fixture) vote(user, candidate string) contract.QueuedVote {
	return contract.QueuedVote{
		VoteID: uuid.NewString(), ElectionID: f.election, CandidateID: candidate, UserID: user,
		Region: "eu-west-1", RequestID: "body-" + user, AcceptedAt: time.Date(2026, 11, 1, 20, 15, 0, 0, time.UTC),
	}
}

func jsonBody(t *testing.T, v contract.QueuedVote) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// send enqueues bodies in one SendMessageBatch, each with an x-request-id attribute
// "rid-<index>" as the edge filter would set it.
func send(t *testing.T, queueURL string, bodies ...string) {
	t.Helper()
	entries := make([]types.SendMessageBatchRequestEntry, len(bodies))
	for i, b := range bodies {
		entries[i] = types.SendMessageBatchRequestEntry{
			Id:          aws.String(strconv.Itoa(i)),
			MessageBody: aws.String(b),
			MessageAttributes: map[string]types.MessageAttributeValue{
				contract.AttrRequestID: {DataType: aws.String("String"), StringValue: aws.String("rid-" + strconv.Itoa(i))},
			},
		}
	}
	out, err := sqsc.SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Failed) > 0 {
		t.Fatalf("send failed: %+v", out.Failed)
	}
}

// receiveN receives exactly n messages (several calls if ElasticMQ splits them), keeping them
// invisible for visibility seconds.
func receiveN(t *testing.T, queueURL string, n int, visibility int32) []types.Message {
	t.Helper()
	var msgs []types.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(msgs) < n && time.Now().Before(deadline) {
		out, err := sqsc.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(queueURL), MaxNumberOfMessages: int32(min(10, n-len(msgs))),
			WaitTimeSeconds: 1, VisibilityTimeout: visibility, MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, out.Messages...)
	}
	if len(msgs) != n {
		t.Fatalf("received %d messages, want %d", len(msgs), n)
	}
	return msgs
}

// queueDepth is visible + in-flight messages.
func queueDepth(t *testing.T, queueURL string) (visible, inFlight int) {
	t.Helper()
	out, err := sqsc.GetQueueAttributes(context.Background(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		t.Fatal(err)
	}
	visible, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	inFlight, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return visible, inFlight
}

func assertQueueEmpty(t *testing.T, queueURL string) {
	t.Helper()
	if v, f := queueDepth(t, queueURL); v != 0 || f != 0 {
		t.Fatalf("queue holds %d visible + %d in-flight messages, want none", v, f)
	}
	out, err := sqsc.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(queueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 0 {
		t.Fatalf("ReceiveMessage returned %d messages from a queue that should be empty", len(out.Messages))
	}
}

func testConfig(queueURL string) Config {
	return Config{
		QueueURL: queueURL, SQSRegion: "us-east-1", Receivers: 2, ReceiveMaxMessages: 10, WaitTime: time.Second,
		BatchMaxMessages: 100, BatchMaxWait: 20 * time.Millisecond, Writers: 2, Deleters: 2,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond, DBTimeout: 5 * time.Second,
		ShutdownTimeout: 5 * time.Second, QueueStatsInterval: time.Second,
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(io.Discard, nil)) }

// startProcessor runs a processor in the background until the test ends.
func startProcessor(t *testing.T, cfg Config, log *slog.Logger) *Metrics {
	t.Helper()
	m := NewMetrics()
	p := New(cfg, sqsc, pool, log, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("processor did not stop within 10s of cancellation")
		}
	})
	return m
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func count(t *testing.T, election, candidate string) int64 {
	t.Helper()
	var n int64
	err := pool.QueryRow(context.Background(), `SELECT votes FROM vote_counts WHERE election_id = $1 AND candidate_id = $2`,
		election, candidate).Scan(&n)
	if err == pgx.ErrNoRows {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func voteRows(t *testing.T, election string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM votes WHERE election_id = $1`, election).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestVoteIsPersistedCountedAndDeleted(t *testing.T) {
	f := newFixture(t)
	v1, v2, v3 := f.vote("user-1", f.candA), f.vote("user-2", f.candA), f.vote("user-3", f.candB)
	send(t, f.queueURL, jsonBody(t, v1), jsonBody(t, v2), jsonBody(t, v3))

	logs := &lockedBuffer{}
	m := startProcessor(t, testConfig(f.queueURL), slog.New(slog.NewJSONHandler(logs, nil)))
	eventually(t, 15*time.Second, "3 votes persisted", func() bool { return voteRows(t, f.election) == 3 })
	eventually(t, 5*time.Second, "messages deleted", func() bool { v, fl := queueDepth(t, f.queueURL); return v+fl == 0 })

	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 2 || b != 1 {
		t.Fatalf("counts A=%d B=%d, want 2 and 1", a, b)
	}
	// The stored row carries the region and the attribute's request id, not the body's.
	var region, requestID, user string
	var accepted time.Time
	err := pool.QueryRow(context.Background(), `SELECT user_id, region, request_id, accepted_at FROM votes WHERE id = $1`, v1.VoteID).
		Scan(&user, &region, &requestID, &accepted)
	if err != nil {
		t.Fatal(err)
	}
	if user != "user-1" || region != "eu-west-1" || requestID != "rid-0" || !accepted.Equal(v1.AcceptedAt) {
		t.Fatalf("row = user %q region %q request %q accepted %s", user, region, requestID, accepted)
	}
	assertQueueEmpty(t, f.queueURL)
	if got := testutil.ToFloat64(m.Persisted); got != 3 {
		t.Fatalf("votes persisted metric = %v, want 3", got)
	}
	// Every persisted request id is in the batch log (correlation from the edge to the row).
	out := logs.String()
	for _, rid := range []string{`"rid-0"`, `"rid-1"`, `"rid-2"`} {
		if !strings.Contains(out, rid) || !strings.Contains(out, `"msg":"vote batch persisted"`) {
			t.Fatalf("request id %s not logged with the persisted batch:\n%s", rid, out)
		}
	}
}

func TestSameMessageTwiceCountsOnce(t *testing.T) {
	f := newFixture(t)
	body := jsonBody(t, f.vote("user-1", f.candA))

	// Twice within one batch.
	send(t, f.queueURL, body, body)
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), NewMetrics())
	res, err := p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 2, 30))
	if err != nil {
		t.Fatal(err)
	}
	if res != (BatchResult{Persisted: 1, Duplicates: 1}) {
		t.Fatalf("result = %+v, want 1 persisted, 1 duplicate", res)
	}
	// And once more later, as a redelivery would bring it.
	send(t, f.queueURL, body)
	res, err = p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 1, 30))
	if err != nil {
		t.Fatal(err)
	}
	if res != (BatchResult{Duplicates: 1}) {
		t.Fatalf("redelivery result = %+v, want 1 duplicate (and no conflict: it is the same vote)", res)
	}
	if n := voteRows(t, f.election); n != 1 {
		t.Fatalf("%d vote rows, want 1", n)
	}
	if c := count(t, f.election, f.candA); c != 1 {
		t.Fatalf("count = %d, want 1", c)
	}
	assertQueueEmpty(t, f.queueURL) // duplicates are deleted too
}

func TestSameUserDifferentVoteIDCountsOnce(t *testing.T) {
	f := newFixture(t)
	first, second := f.vote("user-1", f.candA), f.vote("user-1", f.candB) // second has a new vote id
	send(t, f.queueURL, jsonBody(t, first))
	m := startProcessor(t, testConfig(f.queueURL), quietLogger())
	eventually(t, 15*time.Second, "first vote persisted", func() bool { return voteRows(t, f.election) == 1 })
	send(t, f.queueURL, jsonBody(t, second))
	eventually(t, 15*time.Second, "second vote dropped", func() bool { return testutil.ToFloat64(m.Duplicates) == 1 })

	var stored string
	if err := pool.QueryRow(context.Background(), `SELECT id::text FROM votes WHERE election_id = $1`, f.election).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != first.VoteID || voteRows(t, f.election) != 1 {
		t.Fatalf("stored vote %s (rows %d), want only %s", stored, voteRows(t, f.election), first.VoteID)
	}
	// A second vote of a viewer is a conflict, not a redelivery: it may be a 200 not counted.
	if n := testutil.ToFloat64(m.Conflicts); n != 1 {
		t.Errorf("conflicts = %v, want 1", n)
	}
	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 1 || b != 0 {
		t.Fatalf("counts A=%d B=%d, want 1 and 0", a, b)
	}
	eventually(t, 5*time.Second, "queue empty", func() bool { v, fl := queueDepth(t, f.queueURL); return v+fl == 0 })
	assertQueueEmpty(t, f.queueURL)
}

// bodiesOf returns the message bodies, sorted.
func bodiesOf(msgs []types.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, aws.ToString(m.Body))
	}
	slices.Sort(out)
	return out
}

func TestPoisonIsKeptAndDoesNotBlockNeighbours(t *testing.T) {
	f := newFixture(t)
	ok1, ok2 := f.vote("user-1", f.candA), f.vote("user-2", f.candB)
	badID := f.vote("user-3", f.candA)
	badID.VoteID = "not-a-uuid"
	garbage := "}{ definitely not json"
	send(t, f.queueURL, jsonBody(t, ok1), garbage, jsonBody(t, ok2), jsonBody(t, badID))

	// All four in one HandleBatch call: the batch boundary is exactly what is under test.
	m := NewMetrics()
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), m)
	res, err := p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 4, 2))
	if err != nil {
		t.Fatal(err)
	}
	if res != (BatchResult{Persisted: 2, Poison: 2}) {
		t.Fatalf("result = %+v, want 2 persisted, 2 poison", res)
	}
	if n := voteRows(t, f.election); n != 2 {
		t.Fatalf("%d vote rows, want 2", n)
	}
	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 1 || b != 1 {
		t.Fatalf("counts A=%d B=%d, want 1 and 1", a, b)
	}
	if got := testutil.ToFloat64(m.Poison.WithLabelValues(poisonInvalid)); got != 2 {
		t.Fatalf("poison metric = %v, want 2", got)
	}
	// After the visibility timeout exactly the two poison messages come back: the valid ones
	// were deleted, the poison ones were not (redrive will move them to the DLQ).
	back := receiveN(t, f.queueURL, 2, 30)
	if want := bodiesOf([]types.Message{{Body: aws.String(garbage)}, {Body: aws.String(jsonBody(t, badID))}}); !slices.Equal(bodiesOf(back), want) {
		t.Fatalf("redelivered %q, want %q", bodiesOf(back), want)
	}
}

func TestUnknownCandidateDoesNotAbortBatch(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	ok := f.vote("user-1", f.candA)
	unknown := f.vote("user-2", uuid.NewString())  // no such candidate
	wrongElection := f.vote("user-3", other.candA) // candidate of another election
	unknownElection := f.vote("user-4", f.candB)   // no such election
	unknownElection.ElectionID = uuid.NewString()
	send(t, f.queueURL, jsonBody(t, unknown), jsonBody(t, ok), jsonBody(t, wrongElection), jsonBody(t, unknownElection))

	m := NewMetrics()
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), m)
	res, err := p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 4, 2))
	if err != nil {
		t.Fatalf("batch aborted: %v", err)
	}
	if res != (BatchResult{Persisted: 1, Poison: 3}) {
		t.Fatalf("result = %+v, want 1 persisted, 3 poison", res)
	}
	if n := voteRows(t, f.election); n != 1 {
		t.Fatalf("%d vote rows, want 1", n)
	}
	if c := count(t, f.election, f.candA); c != 1 {
		t.Fatalf("count A = %d, want 1", c)
	}
	if c := count(t, other.election, other.candA); c != 0 {
		t.Fatalf("other election's count = %d, want 0", c)
	}
	if got := testutil.ToFloat64(m.Poison.WithLabelValues(poisonUnknownCandidate)); got != 3 {
		t.Fatalf("unknown-candidate metric = %v, want 3", got)
	}
	back := receiveN(t, f.queueURL, 3, 30)
	want := []string{jsonBody(t, unknown), jsonBody(t, wrongElection), jsonBody(t, unknownElection)}
	slices.Sort(want)
	if !slices.Equal(bodiesOf(back), want) {
		t.Fatalf("redelivered %q, want %q", bodiesOf(back), want)
	}
}

func TestDatabaseFailureKeepsMessagesAndRetries(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Make inserts for this election fail, as a database outage would, without disturbing
	// other tests' elections.
	fn := "fail_" + strings.ReplaceAll(f.election, "-", "")
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.election_id = '%[2]s' THEN RAISE EXCEPTION 'simulated outage'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER %[1]s BEFORE INSERT ON votes FOR EACH ROW EXECUTE FUNCTION %[1]s();`, fn, f.election))
	if err != nil {
		t.Fatal(err)
	}
	dropped := false
	drop := func() {
		if !dropped {
			dropped = true
			if _, err := pool.Exec(ctx, fmt.Sprintf(`DROP TRIGGER %[1]s ON votes; DROP FUNCTION %[1]s();`, fn)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(drop)

	send(t, f.queueURL, jsonBody(t, f.vote("user-1", f.candA)))
	m := startProcessor(t, testConfig(f.queueURL), quietLogger())
	eventually(t, 10*time.Second, "a failed batch", func() bool { return testutil.ToFloat64(m.BatchFailures) >= 1 })
	if n := voteRows(t, f.election); n != 0 {
		t.Fatalf("%d rows stored during the outage", n)
	}
	if v, fl := queueDepth(t, f.queueURL); v+fl != 1 {
		t.Fatalf("queue holds %d+%d messages during the outage, want the 1 message kept", v, fl)
	}
	drop()
	// The message reappears after the queue's 2 s visibility timeout and is then persisted.
	eventually(t, 15*time.Second, "vote persisted after recovery", func() bool { return count(t, f.election, f.candA) == 1 })
	eventually(t, 5*time.Second, "queue empty", func() bool { v, fl := queueDepth(t, f.queueURL); return v+fl == 0 })
	if n := voteRows(t, f.election); n != 1 {
		t.Fatalf("%d rows after recovery, want 1", n)
	}
}

func TestNotifiesTouchedElectionsOnCommit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+contract.ChannelVoteCounts); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "UNLISTEN "+contract.ChannelVoteCounts) //nolint:errcheck

	v := f.vote("user-1", f.candA)
	send(t, f.queueURL, jsonBody(t, v))
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), NewMetrics())
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 1, 30)); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := conn.Conn().WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"electionIds":["` + f.election + `"],"deltas":[{"electionId":"` + f.election + `","candidateId":"` +
		f.candA + `","delta":1,"votes":1}]}`
	if n.Channel != contract.ChannelVoteCounts || n.Payload != want {
		t.Fatalf("notification %s %s, want %s %s", n.Channel, n.Payload, contract.ChannelVoteCounts, want)
	}

	// A batch of only duplicates changes no count and must not wake the results worker.
	send(t, f.queueURL, jsonBody(t, v))
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 1, 30)); err != nil {
		t.Fatal(err)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	if n, err := conn.Conn().WaitForNotification(wctx2); err == nil {
		t.Fatalf("unexpected notification after a duplicate-only batch: %s", n.Payload)
	}
}

func TestShutdownStopsReceiving(t *testing.T) {
	f := newFixture(t)
	cfg := testConfig(f.queueURL)
	p := New(cfg, sqsc, pool, quietLogger(), NewMetrics())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	time.Sleep(300 * time.Millisecond) // receivers are now inside a long poll
	cancel()
	select {
	case <-done:
	case <-time.After(cfg.WaitTime + 2*time.Second):
		t.Fatal("Run did not return within one long poll of cancellation")
	}
	// Nothing receives any more: a vote sent now stays in the queue.
	send(t, f.queueURL, jsonBody(t, f.vote("user-1", f.candA)))
	time.Sleep(1500 * time.Millisecond)
	// In flight would mean an abandoned long poll swallowed it for a visibility timeout.
	if v, fl := queueDepth(t, f.queueURL); v != 1 || fl != 0 {
		t.Fatalf("%d visible + %d in-flight messages after shutdown, want 1 visible", v, fl)
	}
}

func TestAdminEndpoints(t *testing.T) {
	m := NewMetrics()
	m.Persisted.Add(7)
	srv := httptest.NewServer(AdminHandler(m, pool))
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{"voting_processor_votes_persisted_total 7", "voting_processor_duplicates_dropped_total 0",
		`voting_processor_poison_messages_total{reason="invalid"} 0`, "voting_processor_batch_commit_seconds_bucket"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A database that is down makes /healthz fail.
	dead, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	srv2 := httptest.NewServer(AdminHandler(m, dead))
	defer srv2.Close()
	resp, err := http.Get(srv2.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with dead database = %d, want 503", resp.StatusCode)
	}
}
