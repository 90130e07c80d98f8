package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/devstack"
)

// queues reads the depth of the stack's SQS queues straight from ElasticMQ.
type queues struct {
	c *sqs.Client
	s *devstack.Stack
}

func newQueues(ctx context.Context, s *devstack.Stack) (*queues, error) {
	c := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.SQS.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("x", "x", ""), RetryMaxAttempts: 1})
	q := &queues{c: c, s: s}
	if _, err := q.depth(ctx, "votes"); err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return q, nil
}

// depth is every message of a queue: visible, in flight (received, not deleted) and delayed.
func (q *queues) depth(ctx context.Context, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := q.c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(q.s.SQS.QueueURL(name)),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible, types.QueueAttributeNameApproximateNumberOfMessagesDelayed}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range out.Attributes {
		i, _ := strconv.Atoi(v)
		n += i
	}
	return n, nil
}

// drain waits until the votes queue is empty and the election's row count has not moved for
// three seconds, or timeout; it says whether it got there.
func (q *queues) drain(ctx context.Context, s *devstack.Stack, electionID string, timeout time.Duration, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last, stable := -1, 0
	next := time.Now()
	for {
		depth, err := q.depth(ctx, "votes")
		rows, rerr := countRows(ctx, s, electionID)
		switch {
		case err != nil || rerr != nil || depth > 0 || rows != last:
			stable = 0
		default:
			stable++
		}
		if stable >= 3 {
			return true
		}
		if time.Now().After(next) {
			log.Info("draining", "queued", depth, "rows", rows, "queueErr", err, "dbErr", rerr)
			next = time.Now().Add(10 * time.Second)
		}
		last = rows
		select {
		case <-ctx.Done():
			log.Warn("queue not drained", "queued", depth, "rows", rows)
			return false
		case <-time.After(time.Second):
		}
	}
}

func countRows(ctx context.Context, s *devstack.Stack, electionID string) (int, error) {
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM votes WHERE election_id = $1`, electionID).Scan(&n)
	return n, err
}

type row struct{ id, user, candidate string }

// check compares what the viewers were told with what PostgreSQL and ElasticMQ hold.
func (r *Result) check(ctx context.Context, s *devstack.Stack, e devstack.Election, viewers []*viewer, q *queues, dlqBefore int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer conn.Close(ctx)

	rows, err := conn.Query(ctx, `SELECT id::text, user_id, candidate_id::text FROM votes WHERE election_id = $1`, e.ID)
	if err != nil {
		return fmt.Errorf("check votes: %w", err)
	}
	byID := map[string]row{}
	byUser := map[string][]row{}
	perCandidate := map[string]int64{}
	for rows.Next() {
		var x row
		if err := rows.Scan(&x.id, &x.user, &x.candidate); err != nil {
			return fmt.Errorf("check votes: %w", err)
		}
		byID[x.id] = x
		byUser[x.user] = append(byUser[x.user], x)
		perCandidate[x.candidate]++
		r.Rows++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check votes: %w", err)
	}
	counts := map[string]int64{}
	crow, err := conn.Query(ctx, `SELECT candidate_id::text, votes FROM vote_counts WHERE election_id = $1`, e.ID)
	if err != nil {
		return fmt.Errorf("check vote_counts: %w", err)
	}
	for crow.Next() {
		var c string
		var n int64
		if err := crow.Scan(&c, &n); err != nil {
			return fmt.Errorf("check vote_counts: %w", err)
		}
		counts[c] = n
	}
	if err := crow.Err(); err != nil {
		return fmt.Errorf("check vote_counts: %w", err)
	}
	for _, c := range e.Candidates {
		r.Counts = append(r.Counts, CandidateCount{Candidate: c.Name, Counted: counts[c.ID], Rows: perCandidate[c.ID]})
		if counts[c.ID] != perCandidate[c.ID] {
			r.CountMismatch++
		}
	}

	for _, list := range byUser {
		if len(list) > 1 {
			r.DupRows += len(list) - 1
		}
	}
	okViewers := map[string]bool{}
	answeredTo := map[string]int{}
	var latencies []time.Duration
	for _, v := range viewers {
		o := &v.first
		r.Attempts += len(o.attempts)
		for _, a := range o.attempts {
			switch {
			case a.status == 503:
				r.Unavailable++
			case a.status == 0:
				r.ConnErrors++
			}
		}
		if o.final {
			latencies = append(latencies, o.took)
		}
		mine := byUser[v.sub]
		var problems []string
		count := func(n *int, problem string) {
			*n++
			problems = append(problems, problem)
		}
		switch {
		case o.ok():
			r.OK++
			okViewers[v.sub] = true
			answeredTo[o.voteID]++
			if _, stored := byID[o.voteID]; !stored {
				count(&r.Lost200, "lost 200")
			}
			if len(mine) > 0 && !slices.ContainsFunc(mine, func(x row) bool { return x.id == o.voteID && x.candidate == v.candidate }) {
				count(&r.Other200, "200 ≠ row")
			}
		case o.duplicate():
			r.Dup409++
			if len(o.attempts) == 1 {
				r.FirstTry409++
			}
			if len(mine) == 0 {
				count(&r.NoRow409, "409 no row")
			}
		case o.final:
			count(&r.Refused, "refused")
			r.refusals = append(r.refusals, fmt.Sprintf("%d %s", o.status, o.code))
		default:
			count(&r.GaveUp, "gave up")
		}
		if len(v.revote.attempts) > 0 {
			r.Revoted++
			switch {
			case v.revote.ok() && v.revote.voteID != "" && v.revote.voteID == v.first.voteID:
				// The same vote answered again (its reservation adopted, the same id re-sent): one
				// row, one vote; an idempotent replay, not a second admission.
				r.Replayed++
			case v.revote.ok():
				count(&r.Readmitted, "re-admitted")
			case v.revote.duplicate():
				// Right: with no row, the first 200 already counts as lost.
			case v.revote.final:
				count(&r.Refused, "revote refused")
				r.refusals = append(r.refusals, fmt.Sprintf("revote %d %s", v.revote.status, v.revote.code))
			default:
				count(&r.GaveUp, "revote gave up")
			}
		}
		if len(mine) > 0 && !o.ok() {
			problems = append(problems, "row w/o 200") // allowed: kept for the record
		}
		if len(problems) > 0 {
			r.problems = append(r.problems, record(v, problems, mine))
		}
	}
	for _, n := range answeredTo {
		if n > 1 {
			r.DupVoteIDs += n - 1
		}
	}
	for user, list := range byUser {
		if !okViewers[user] {
			r.RowsWithout200 += len(list) // the viewers' own and any row of a stranger
		}
	}
	slices.Sort(latencies)
	r.P50, r.P99, r.Max = percentile(latencies, 0.50), percentile(latencies, 0.99), percentile(latencies, 1)

	if dlq, err := q.depth(ctx, "votes-dlq"); err == nil {
		r.DLQ = max(0, dlq-dlqBefore)
	} else {
		r.DLQ = -1
	}
	return nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}

// viewerRecord is one viewer with a problem, for -problems: what the app saw and what is stored.
type viewerRecord struct {
	Viewer    string         `json:"viewer"`
	Candidate string         `json:"candidate"`
	Problems  []string       `json:"problems"`
	First     outcomeRecord  `json:"first"`
	Revote    *outcomeRecord `json:"revote,omitempty"`
	Rows      []string       `json:"rows,omitempty"` // vote id / candidate id
}

type outcomeRecord struct {
	Status   int      `json:"status,omitempty"` // 0: no final answer
	Code     string   `json:"code,omitempty"`
	VoteID   string   `json:"voteId,omitempty"`
	Attempts []string `json:"attempts"` // status or error, and how long it took
}

func record(v *viewer, problems []string, rows []row) viewerRecord {
	out := viewerRecord{Viewer: v.sub, Candidate: v.candidate, Problems: problems, First: outcomeRecordOf(&v.first)}
	if len(v.revote.attempts) > 0 {
		o := outcomeRecordOf(&v.revote)
		out.Revote = &o
	}
	for _, x := range rows {
		out.Rows = append(out.Rows, x.id+" / "+x.candidate)
	}
	return out
}

func outcomeRecordOf(o *outcome) outcomeRecord {
	out := outcomeRecord{Code: o.code, VoteID: o.voteID}
	if o.final {
		out.Status = o.status
	}
	for _, a := range o.attempts {
		what := strconv.Itoa(a.status)
		if a.status == 0 {
			what = a.err
		}
		out.Attempts = append(out.Attempts, fmt.Sprintf("%s %dms", what, a.took.Milliseconds()))
	}
	return out
}
