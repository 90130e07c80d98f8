package processor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tvvote/voting/devstack"
)

// binDir holds the processor binary built for this test run; TestMain removes it.
var binDir string

// buildProcessor compiles the processor binary once per test binary run, from this source
// tree (bin/processor may be stale).
var buildProcessor = sync.OnceValues(func() (string, error) { return goBuild("processor") })

// buildCrashProcessor compiles the crash test's processor: built with -tags crashtest, it kills
// itself right after its first commit (crashtest.go); no other build has that code.
var buildCrashProcessor = sync.OnceValues(func() (string, error) { return goBuild("processor-crashtest", "-tags", "crashtest") })

func goBuild(name string, flags ...string) (string, error) {
	bin := filepath.Join(binDir, name)
	args := append(append([]string{"build"}, flags...), "-o", bin, "./cmd/processor")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

func processorBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildProcessor()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func crashProcessorBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildCrashProcessor()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// binaryEnv is the environment of a processor process on this package's services.
func binaryEnv(queueURL string, extra ...string) []string {
	return append(append(os.Environ(),
		"PROCESSOR_DATABASE_URL="+pgsrv.DSN, "PROCESSOR_QUEUE_URL="+queueURL, "PROCESSOR_SQS_ENDPOINT="+mq.Endpoint,
		"PROCESSOR_SQS_REGION=us-east-1", "PROCESSOR_METRICS_ADDR=127.0.0.1:0", "PROCESSOR_RECEIVERS=2",
		"PROCESSOR_WAIT_TIME=1s", "PROCESSOR_BATCH_MAX_WAIT=300ms", "PROCESSOR_BACKOFF_MIN=50ms",
		"PROCESSOR_BACKOFF_MAX=300ms"), extra...)
}

func statsTotal(t *testing.T, election string) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), `SELECT COALESCE(sum(votes), 0) FROM vote_stats WHERE election_id = $1`, election).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCrashBetweenCommitAndDelete kills the processor (SIGKILL, from inside, at the worst
// moment: its first batch committed, nothing deleted; the crashtest build) and restarts it (the
// real build): every vote comes back from SQS, none is counted twice.
func TestCrashBetweenCommitAndDelete(t *testing.T) {
	crashBin, bin := crashProcessorBinary(t), processorBinary(t)
	f := newFixture(t)
	var bodies []string
	for i := range 30 {
		cand := f.candA
		if i%3 == 0 {
			cand = f.candB
		}
		bodies = append(bodies, jsonBody(t, f.vote("user-"+strconv.Itoa(i), cand)))
	}
	for i := 0; i < len(bodies); i += 10 {
		send(t, f.queueURL, bodies[i:i+10]...)
	}

	var out1 bytes.Buffer
	crash := exec.Command(crashBin)
	crash.Env = binaryEnv(f.queueURL)
	crash.Stdout, crash.Stderr = &out1, &out1
	if err := crash.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- crash.Wait() }()
	select {
	case err := <-waitErr:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("processor ended with %v, want death by SIGKILL after its first commit\n%s", err, out1.String())
		}
	case <-time.After(20 * time.Second):
		_ = crash.Process.Kill()
		t.Fatalf("processor did not commit and die within 20s\n%s", out1.String())
	}
	committed := voteRows(t, f.election)
	if committed == 0 {
		t.Fatalf("no batch committed before the crash\n%s", out1.String())
	}
	if v, fl := queueDepth(t, f.queueURL); v+fl != 30 {
		t.Fatalf("queue holds %d+%d messages after the crash, want all 30 (nothing deleted)", v, fl)
	}
	t.Logf("crash after committing %d of 30 votes", committed)

	var out2 bytes.Buffer
	proc := exec.Command(bin)
	proc.Env = binaryEnv(f.queueURL)
	proc.Stdout, proc.Stderr = &out2, &out2
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer proc.Process.Kill() //nolint:errcheck // no-op once it exited
	// The committed messages come back after the queue's 2 s visibility timeout.
	eventually(t, 20*time.Second, "all votes persisted and the queue drained", func() bool {
		v, fl := queueDepth(t, f.queueURL)
		return voteRows(t, f.election) == 30 && v+fl == 0
	})
	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 20 || b != 10 {
		t.Fatalf("counts A=%d B=%d after crash and restart, want exactly 20 and 10", a, b)
	}
	if n := statsTotal(t, f.election); n != 30 {
		t.Fatalf("vote_stats total %d, want 30", n)
	}

	// SIGTERM: a clean, prompt exit (one long poll of 1 s plus the drain).
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- proc.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SIGTERM exit: %v\n%s", err, out2.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("processor did not stop within 10s of SIGTERM")
	}
	if !strings.Contains(out2.String(), "processor stopped cleanly") {
		t.Fatalf("no clean-stop log line:\n%s", out2.String())
	}
}

// dlqFixture is a queue that redrives to its own DLQ after maxReceiveCount 5, as production's.
func dlqFixture(t *testing.T, f *fixture, visibility int) (dlqURL string) {
	t.Helper()
	ctx := context.Background()
	name := "d-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20]
	dlq, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:%s:%s-dlq","maxReceiveCount":"5"}`, devstack.AccountID, name)
	q, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{
		"VisibilityTimeout": strconv.Itoa(visibility), "RedrivePolicy": policy}})
	if err != nil {
		t.Fatal(err)
	}
	f.queueURL = aws.ToString(q.QueueUrl)
	return aws.ToString(dlq.QueueUrl)
}

// TestPoisonReachesDLQAndReplayMovesItBack: poison goes to the DLQ through the queue's redrive
// policy (within seconds thanks to PoisonRetryDelay, although the queue's visibility timeout is
// 30 s) while its batch neighbours are persisted; once the cause is fixed (the candidate
// exists) replay-dlq moves it back and it is counted; an unparsable body just returns to the
// DLQ.
func TestPoisonReachesDLQAndReplayMovesItBack(t *testing.T) {
	f := newFixture(t)
	dlqURL := dlqFixture(t, &f, 30)
	late := uuid.NewString() // a candidate that does not exist yet
	ok1, ok2, early := f.vote("user-1", f.candA), f.vote("user-2", f.candB), f.vote("user-3", late)
	garbage := "{not a vote"
	send(t, f.queueURL, jsonBody(t, ok1), garbage, jsonBody(t, early), jsonBody(t, ok2))

	cfg := testConfig(f.queueURL)
	cfg.PoisonRetryDelay = time.Second
	m := startProcessor(t, cfg, quietLogger())
	eventually(t, 20*time.Second, "two poison messages dead-lettered", func() bool {
		v, fl := queueDepth(t, dlqURL)
		return v+fl == 2
	})
	if voteRows(t, f.election) != 2 || count(t, f.election, f.candA) != 1 || count(t, f.election, f.candB) != 1 {
		t.Fatalf("neighbours not persisted: rows %d", voteRows(t, f.election))
	}
	eventually(t, 5*time.Second, "main queue empty", func() bool { v, fl := queueDepth(t, f.queueURL); return v+fl == 0 })
	if got := testutil.ToFloat64(m.Poison.WithLabelValues(poisonInvalid)); got < 5 {
		t.Fatalf("invalid poison counted %v times, want one per receive (5)", got)
	}
	eventually(t, 5*time.Second, "DLQ depth gauge", func() bool { return testutil.ToFloat64(m.DLQMessages) == 2 })

	// Fix the cause, then replay with the real binary (the DLQ is found from the redrive policy).
	if _, err := pool.Exec(context.Background(), `INSERT INTO candidates (id, election_id, name) VALUES ($1, $2, 'Late Entry')`,
		late, f.election); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(processorBinary(t), "replay-dlq")
	cmd.Env = append(os.Environ(), "PROCESSOR_QUEUE_URL="+f.queueURL, "PROCESSOR_SQS_ENDPOINT="+mq.Endpoint)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("replay-dlq: %v\n%s", err, stderr.String())
	}
	var moved []ReplayedMessage
	var summary ReplayReport
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var line struct {
			Moved   *ReplayedMessage `json:"moved"`
			Summary *ReplayReport    `json:"summary"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("report line %q: %v", sc.Text(), err)
		}
		if line.Moved != nil {
			moved = append(moved, *line.Moved)
		}
		if line.Summary != nil {
			summary = *line.Summary
		}
	}
	if summary.Moved != 2 || summary.Failed != 0 || summary.From != dlqURL || summary.To != f.queueURL || len(moved) != 2 {
		t.Fatalf("replay report %+v with %d lines, want 2 moved from the DLQ\n%s", summary, len(moved), stdout)
	}
	var voteIDs []string
	for _, r := range moved {
		voteIDs = append(voteIDs, r.VoteID)
	}
	slices.Sort(voteIDs)
	if !slices.Equal(voteIDs, []string{"", early.VoteID}) || !slices.ContainsFunc(moved, func(r ReplayedMessage) bool { return r.ParseError != "" }) {
		t.Fatalf("report names votes %q, want the early vote and one unparsable message", voteIDs)
	}

	eventually(t, 15*time.Second, "replayed vote counted", func() bool { return count(t, f.election, late) == 1 })
	eventually(t, 20*time.Second, "garbage back in the DLQ", func() bool {
		v, fl := queueDepth(t, dlqURL)
		mv, mfl := queueDepth(t, f.queueURL)
		return v+fl == 1 && mv+mfl == 0
	})
	if voteRows(t, f.election) != 3 {
		t.Fatalf("%d rows, want 3", voteRows(t, f.election))
	}
}

// TestPostgresRestartDuringStream restarts PostgreSQL while 10k votes (and 500 redelivered
// copies) stream through: receiving pauses, nothing is deleted uncommitted, and every vote ends
// up stored and counted exactly once.
func TestPostgresRestartDuringStream(t *testing.T) {
	const votes, copies = 10_000, 500
	f := newFixture(t)
	ctx := context.Background()
	// The processor gets its own pool, as in production; the test's pool only reads.
	procPool, err := pgxpool.New(ctx, pgsrv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer procPool.Close()

	bodies := make([]string, 0, votes+copies)
	for i := range votes {
		cand := f.candA
		if i%4 == 0 {
			cand = f.candB
		}
		bodies = append(bodies, jsonBody(t, f.vote(fmt.Sprintf("stream-%05d", i), cand)))
	}
	for i := range copies {
		bodies = append(bodies, bodies[i*7]) // redelivered messages
	}
	cfg := testConfig(f.queueURL)
	cfg.Receivers, cfg.Deleters, cfg.BatchMaxMessages = 4, 4, 500
	m := NewMetrics()
	p := New(cfg, sqsc, procPool, quietLogger(), m)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()

	// Stream at a steady pace from 4 senders, so the restart falls in the middle.
	sendErr := make(chan error, 4)
	var senders sync.WaitGroup
	for w := range 4 {
		senders.Go(func() {
			for i := w * 10; i < len(bodies); i += 40 {
				entries := []types.SendMessageBatchRequestEntry{}
				for j, b := range bodies[i:min(i+10, len(bodies))] {
					entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(b)})
				}
				if _, err := sqsc.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(f.queueURL), Entries: entries}); err != nil {
					sendErr <- err
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	eventually(t, 30*time.Second, "a fifth of the stream persisted", func() bool { return testutil.ToFloat64(m.Persisted) >= votes/5 })
	restartPostgres(t)
	t.Logf("restarted PostgreSQL after %.0f votes persisted", testutil.ToFloat64(m.Persisted))
	senders.Wait()
	close(sendErr)
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}

	var rows, counted, stats int64
	eventually(t, 60*time.Second, "all votes persisted and the queue drained", func() bool {
		err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM votes WHERE election_id = $1),
			(SELECT COALESCE(sum(votes), 0) FROM vote_counts WHERE election_id = $1),
			(SELECT COALESCE(sum(votes), 0) FROM vote_stats WHERE election_id = $1)`, f.election).Scan(&rows, &counted, &stats)
		if err != nil {
			return false // the test pool reconnects after the restart
		}
		v, fl := queueDepth(t, f.queueURL)
		return rows == votes && v+fl == 0
	})
	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != votes*3/4 || b != votes/4 || counted != votes || stats != votes {
		t.Fatalf("counts A=%d B=%d total %d stats %d, want %d, %d, %d, %d", a, b, counted, stats, votes*3/4, votes/4, votes, votes)
	}
	if testutil.ToFloat64(m.BatchFailures) == 0 {
		t.Fatal("no batch failed: the restart did not hit the stream")
	}
	if got := testutil.ToFloat64(m.DatabaseUp); got != 1 {
		t.Fatalf("database_up = %v after recovery", got)
	}
	t.Logf("batch failures %v, persisted %v, duplicates %v, visibility extensions %v",
		testutil.ToFloat64(m.BatchFailures), testutil.ToFloat64(m.Persisted), testutil.ToFloat64(m.Duplicates),
		testutil.ToFloat64(m.VisibilityExtensions))
}

// restartPostgres restarts the package's server. devstack stops it with SIGTERM, which
// PostgreSQL treats as a "smart" shutdown that waits for every client session to end; so, as an
// operator would, the sessions are terminated once the shutdown has begun (new connections are
// refused by then, so the pools cannot reconnect).
func restartPostgres(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	killer, err := pgx.Connect(ctx, pgsrv.DSN)
	if err != nil {
		t.Fatal(err)
	}
	restarted := make(chan error, 1)
	go func() { restarted <- pgsrv.Restart(ctx, time.Second) }()
	time.Sleep(200 * time.Millisecond)
	_, _ = killer.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	_ = killer.Close(ctx)
	select {
	case err := <-restarted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("PostgreSQL did not restart within 40s")
	}
	pool.Reset() // drop the test pool's dead connections
}

// TestSlowBatchKeepsItsMessages: a transaction slower than the visibility timeout gets its
// messages' visibility extended, so no other receiver gets them meanwhile.
func TestSlowBatchKeepsItsMessages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	fn := "slow_" + strings.ReplaceAll(f.election, "-", "")
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.election_id = '%[2]s' THEN PERFORM pg_sleep(3); END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER %[1]s BEFORE INSERT ON votes FOR EACH ROW EXECUTE FUNCTION %[1]s();`, fn, f.election))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(ctx, fmt.Sprintf(`DROP TRIGGER %[1]s ON votes; DROP FUNCTION %[1]s();`, fn))
	})
	// A 1 s visibility timeout, a 3 s transaction.
	out, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("s-" + strings.ReplaceAll(uuid.NewString(), "-", "")[:20]),
		Attributes: map[string]string{"VisibilityTimeout": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	f.queueURL = aws.ToString(out.QueueUrl)
	send(t, f.queueURL, jsonBody(t, f.vote("user-1", f.candA)))
	m := startProcessor(t, testConfig(f.queueURL), quietLogger())
	eventually(t, 15*time.Second, "slow vote persisted", func() bool { return count(t, f.election, f.candA) == 1 })
	eventually(t, 5*time.Second, "queue empty", func() bool { v, fl := queueDepth(t, f.queueURL); return v+fl == 0 })
	if got := testutil.ToFloat64(m.Received); got != 1 {
		t.Fatalf("message received %v times, want once (its visibility should have been extended)", got)
	}
	if testutil.ToFloat64(m.VisibilityExtensions) == 0 {
		t.Fatal("no visibility extension recorded")
	}
}

// TestRejectedRowIsIsolated: when PostgreSQL rejects one row (a data error), the batch is split
// until that row stands alone; its neighbours commit and it is left for the DLQ.
func TestRejectedRowIsIsolated(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	fn := "reject_" + strings.ReplaceAll(f.election, "-", "")
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		CREATE FUNCTION %[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.election_id = '%[2]s' AND NEW.user_id = 'bad-user' THEN
				RAISE EXCEPTION 'rejected row' USING ERRCODE = 'check_violation';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER %[1]s BEFORE INSERT ON votes FOR EACH ROW EXECUTE FUNCTION %[1]s();`, fn, f.election))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(ctx, fmt.Sprintf(`DROP TRIGGER %[1]s ON votes; DROP FUNCTION %[1]s();`, fn))
	})
	var bodies []string
	for i := range 9 {
		bodies = append(bodies, jsonBody(t, f.vote("user-"+strconv.Itoa(i), f.candA)))
	}
	bad := f.vote("bad-user", f.candB)
	bodies = slices.Insert(bodies, 4, jsonBody(t, bad))
	send(t, f.queueURL, bodies...)
	m := NewMetrics()
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), m)
	res, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 10, 2))
	if err != nil {
		t.Fatal(err)
	}
	if res != (BatchResult{Persisted: 9, Poison: 1}) {
		t.Fatalf("result %+v, want 9 persisted and 1 poison", res)
	}
	if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 9 || b != 0 {
		t.Fatalf("counts A=%d B=%d, want 9 and 0", a, b)
	}
	if got := testutil.ToFloat64(m.Poison.WithLabelValues(poisonRejected)); got != 1 {
		t.Fatalf("rejected poison metric %v, want 1", got)
	}
	back := receiveN(t, f.queueURL, 1, 30)
	if aws.ToString(back[0].Body) != jsonBody(t, bad) {
		t.Fatalf("redelivered %q, want the rejected vote", aws.ToString(back[0].Body))
	}
}
