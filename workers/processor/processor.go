// Package processor moves admitted votes from SQS into PostgreSQL: batch insert with
// ON CONFLICT DO NOTHING, per-candidate counts and hourly statistics bumped in the same
// transaction from the rows actually inserted, and SQS messages deleted only after the commit.
// A crash at any point therefore either loses nothing (the message comes back) or double-counts
// nothing (the redelivered vote hits a unique key and adds no count).
//
// The pipeline (pipeline.go): receivers long-poll SQS and parse; writers cut the stream into
// batches of up to BatchMaxMessages or BatchMaxWait and run one transaction per batch; deleters
// remove committed messages with DeleteMessageBatch. A lease keeper extends the visibility of
// every message held longer than half the visibility timeout, so a slow batch is not handed to
// another consumer mid-transaction.
package processor

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.opentelemetry.io/otel/trace"

	"github.com/tvvote/voting/contract"
)

// Queue is the part of *sqs.Client the processor uses.
type Queue interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
}

// Processor runs the receive → persist → delete pipeline.
type Processor struct {
	cfg     Config
	queue   Queue
	db      beginner
	log     *slog.Logger
	metrics *Metrics
	gate    *gate
	leases  *leases
	// visibility is the effective visibility timeout (configured or the queue's); Run resolves
	// it before the first receive.
	visibility time.Duration
	// insert sends a batch's votes to PostgreSQL: insertUnnest, the measured faster path
	// (BENCHMARKS.md); the benchmark may choose the COPY path (insertcopy.go).
	insert inserter
	ages   *receiverAges
	// edge, if set, is the edge's admission store, told about every stored vote.
	edge EdgeStore
	// tracer writes a span per batch (TraceWith); nil: none.
	tracer trace.Tracer
}

// New wires a Processor. db is normally a *pgxpool.Pool.
func New(cfg Config, queue Queue, db beginner, log *slog.Logger, metrics *Metrics) *Processor {
	cfg = withDefaults(cfg)
	vis := cfg.VisibilityTimeout
	if vis == 0 {
		vis = defaultQueueVisibility
	}
	return &Processor{cfg: cfg, queue: queue, db: db, log: log, metrics: metrics,
		gate: newGate(metrics.DatabaseUp), leases: newLeases(), visibility: vis,
		insert: insertUnnest, ages: newReceiverAges(cfg.Receivers, metrics.OldestMessageAge)}
}

// inbound is one received message on its way through the pipeline.
type inbound struct {
	msg        types.Message
	receivedAt time.Time
	vote       vote
	err        error // parse error (poison) or nil
}

func newInbound(m types.Message, now time.Time) *inbound {
	v, err := parseVote(m)
	return &inbound{msg: m, receivedAt: now, vote: v, err: err}
}

// BatchResult counts what one batch did with each message.
type BatchResult struct {
	Persisted  int // inserted and counted, deleted from the queue
	Duplicates int // already stored, deleted from the queue
	// Conflicts are the duplicates whose viewer holds another vote (not a redelivery of the
	// same one): a vote the edge may have answered 200 that is not counted.
	Conflicts int
	Poison    int // invalid, unknown candidate or rejected by the database: left for the DLQ
}

// outcome is a processed batch: what to delete and what to hand back for dead-lettering.
type outcome struct {
	result   BatchResult
	toDelete []*inbound
	poison   []*inbound
}

// HandleBatch persists one received batch, then deletes the messages that are safely stored and
// hands poison back to the queue, synchronously. It returns an error only when the transaction
// failed for a reason worth retrying; then nothing was deleted.
func (p *Processor) HandleBatch(ctx context.Context, msgs []types.Message) (BatchResult, error) {
	now := time.Now()
	items := make([]*inbound, len(msgs))
	for i, m := range msgs {
		items[i] = newInbound(m, now)
	}
	p.metrics.Received.Add(float64(len(items)))
	p.metrics.BatchSize.Observe(float64(len(items)))
	ctx, span := p.startBatchSpan(ctx, items)
	defer span.End()
	out, err := p.process(ctx, items)
	recordOutcome(span, out, err)
	if err != nil {
		return BatchResult{}, err
	}
	p.deleteMessages(ctx, out.toDelete)
	p.releasePoison(ctx, out.poison)
	return out.result, nil
}

// process persists the valid votes of a batch (splitting it when PostgreSQL rejects a row) and
// classifies every message; the outcome metrics and the batch log line are written here. It may
// run more than once for one batch (a retry after a transient failure), so the per-message
// intake metrics are counted by its callers.
func (p *Processor) process(ctx context.Context, items []*inbound) (outcome, error) {
	var out outcome

	// owner[i] is the index in votes of message i, or -1 for poison. A vote id seen twice in one
	// batch (the same message sent twice) maps to the first copy, whose fate it shares.
	owner := make([]int, len(items))
	votes := make([]vote, 0, len(items))
	byID := make(map[string]int, len(items))
	for i, it := range items {
		if it.err != nil {
			owner[i] = -1
			continue
		}
		if j, ok := byID[it.vote.ID]; ok {
			owner[i] = j
			continue
		}
		byID[it.vote.ID] = len(votes)
		owner[i] = len(votes)
		votes = append(votes, it.vote)
	}

	acc := txResult{inserted: map[string]bool{}, unknown: map[string]bool{}}
	rejected := map[string]error{}
	if len(votes) > 0 {
		if err := p.persistSplit(ctx, votes, &acc, rejected); err != nil {
			return outcome{}, err
		}
	}

	conflicts := p.settle(ctx, votes, &acc, rejected)

	persistedRequests := []string{} // empty, not null, in the JSON log
	duplicateRequests := []string{}
	firstSeen := map[int]bool{}
	now := time.Now()
	for i, it := range items {
		j := owner[i]
		switch {
		case j < 0:
			p.poison(&out, it, poisonInvalid, "poison message left for dead-lettering", "err", it.err)
		case rejected[votes[j].ID] != nil:
			p.poison(&out, it, poisonRejected, "vote rejected by the database, left for dead-lettering",
				"voteId", votes[j].ID, "err", rejected[votes[j].ID])
		case acc.unknown[votes[j].ID]:
			p.poison(&out, it, poisonUnknownCandidate, "vote for unknown election/candidate left for dead-lettering",
				"voteId", votes[j].ID, "electionId", votes[j].ElectionID, "candidateId", votes[j].CandidateID)
		default:
			out.toDelete = append(out.toDelete, it)
			v := votes[j]
			if acc.inserted[v.ID] && !firstSeen[j] {
				firstSeen[j] = true
				out.result.Persisted++
				persistedRequests = append(persistedRequests, v.RequestID)
				p.log.Info("vote persisted", "requestId", v.RequestID, "voteId", v.ID, "electionId", v.ElectionID)
				p.metrics.VoteLatency.Observe(max(0, now.Sub(v.AcceptedAt).Seconds()))
			} else {
				out.result.Duplicates++
				duplicateRequests = append(duplicateRequests, v.RequestID)
				if stored, ok := conflicts[v.ID]; ok && !firstSeen[j] {
					firstSeen[j] = true
					out.result.Conflicts++
					p.metrics.Conflicts.Inc()
					p.log.Error("vote dropped: its viewer already has another vote stored", "voteId", v.ID,
						"storedVoteId", stored, "electionId", v.ElectionID, "viewerId", v.UserID, "requestId", v.RequestID,
						"region", v.Region)
				}
			}
		}
	}
	p.metrics.Duplicates.Add(float64(out.result.Duplicates))
	if len(votes) > 0 {
		p.log.Info("vote batch persisted", "persisted", out.result.Persisted, "duplicates", out.result.Duplicates,
			"conflicts", out.result.Conflicts,
			"poison", out.result.Poison, "requestIds", persistedRequests, "duplicateRequestIds", duplicateRequests,
			"electionIds", acc.elections)
	}
	return out, nil
}

func (p *Processor) poison(out *outcome, it *inbound, reason, msg string, args ...any) {
	out.result.Poison++
	out.poison = append(out.poison, it)
	p.metrics.Poison.WithLabelValues(reason).Inc()
	p.log.Warn(msg, append([]any{"reason", reason, "messageId", aws.ToString(it.msg.MessageId),
		"receiveCount", receiveCount(it.msg), "requestId", stringAttr(it.msg, contract.AttrRequestID)}, args...)...)
}

// settle runs after a batch committed: it makes the inserted votes final in the edge store and
// finds the skipped votes that lost to another vote of their viewer (vote id → stored id).
func (p *Processor) settle(ctx context.Context, votes []vote, acc *txResult, rejected map[string]error) map[string]string {
	p.recordInEdge(ctx, votes, acc.inserted)
	var skipped []vote
	for _, v := range votes {
		if !acc.inserted[v.ID] && !acc.unknown[v.ID] && rejected[v.ID] == nil {
			skipped = append(skipped, v)
		}
	}
	conflicts, err := findConflicts(ctx, p.db, skipped)
	if err != nil {
		p.log.Warn("could not tell redelivered votes from second votes", "votes", len(skipped), "err", err)
	}
	if err := recordDuplicates(ctx, p.db, skipped, conflicts); err != nil {
		p.log.Warn("second votes not counted in vote_stats", "votes", len(conflicts), "err", err)
	}
	return conflicts
}

// persistSplit commits votes in one transaction; when PostgreSQL rejects the rows themselves it
// bisects, so one bad row costs log2(batch) extra transactions instead of blocking its
// neighbours until they, too, are dead-lettered. Rejected single votes land in rejected.
func (p *Processor) persistSplit(ctx context.Context, votes []vote, acc *txResult, rejected map[string]error) error {
	res, err := p.persistOnce(ctx, votes)
	if err == nil {
		for id := range res.inserted {
			acc.inserted[id] = true
		}
		for id := range res.unknown {
			acc.unknown[id] = true
		}
		acc.deltas = append(acc.deltas, res.deltas...)
		for _, e := range res.elections {
			if !slices.Contains(acc.elections, e) {
				acc.elections = append(acc.elections, e)
			}
		}
		return nil
	}
	if !isDataError(err) {
		return err
	}
	if len(votes) == 1 {
		rejected[votes[0].ID] = err
		return nil
	}
	p.log.Warn("batch rejected by the database; splitting it to isolate the bad rows", "votes", len(votes), "err", err)
	half := len(votes) / 2
	if err := p.persistSplit(ctx, votes[:half], acc, rejected); err != nil {
		return err
	}
	return p.persistSplit(ctx, votes[half:], acc, rejected)
}

// persistOnce is one bounded transaction with its metrics.
func (p *Processor) persistOnce(ctx context.Context, votes []vote) (txResult, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DBTimeout)
	defer cancel()
	start := time.Now()
	res, err := persist(ctx, p.db, p.insert, votes)
	if err != nil {
		p.metrics.BatchFailures.Inc()
		return res, err
	}
	p.metrics.CommitSeconds.Observe(time.Since(start).Seconds())
	p.metrics.Persisted.Add(float64(len(res.inserted)))
	afterCommit(p.log)
	return res, nil
}

// deleteMessages removes committed messages, ten per DeleteMessageBatch. A failed delete is only
// logged: the message comes back after the visibility timeout and is dropped as a duplicate.
func (p *Processor) deleteMessages(ctx context.Context, items []*inbound) {
	for start := 0; start < len(items); start += 10 {
		p.deleteChunk(ctx, items[start:min(start+10, len(items))])
	}
}

func (p *Processor) deleteChunk(ctx context.Context, chunk []*inbound) {
	defer p.leases.remove(chunk)
	entries := make([]types.DeleteMessageBatchRequestEntry, len(chunk))
	for i, it := range chunk {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: it.msg.ReceiptHandle}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	out, err := p.queue.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(p.cfg.QueueURL), Entries: entries})
	p.metrics.SQSSeconds.WithLabelValues(opDelete).Observe(time.Since(start).Seconds())
	if err != nil {
		p.metrics.DeleteErrors.Add(float64(len(chunk)))
		p.log.Error("delete failed; committed messages will be redelivered and dropped as duplicates",
			"err", err, "messageIds", messageIDs(chunk))
		return
	}
	for _, f := range out.Failed {
		p.metrics.DeleteErrors.Inc()
		idx, _ := strconv.Atoi(aws.ToString(f.Id))
		if idx >= 0 && idx < len(chunk) {
			p.log.Error("delete failed for one message", "messageId", aws.ToString(chunk[idx].msg.MessageId),
				"code", aws.ToString(f.Code), "reason", aws.ToString(f.Message))
		}
	}
}

// releasePoison stops holding poison messages. With PoisonRetryDelay they come back after that
// delay instead of the full visibility timeout, so after maxReceiveCount receives the queue's
// redrive policy moves them to the DLQ within seconds rather than minutes.
func (p *Processor) releasePoison(ctx context.Context, items []*inbound) {
	for start := 0; start < len(items); start += 10 {
		chunk := items[start:min(start+10, len(items))]
		if p.cfg.PoisonRetryDelay > 0 {
			p.changeVisibility(ctx, chunk, p.cfg.PoisonRetryDelay)
		}
		p.leases.remove(chunk)
	}
}

// changeVisibility sets the visibility of up to ten messages; it reports the ones that failed
// (typically already deleted or with an expired receipt handle).
func (p *Processor) changeVisibility(ctx context.Context, chunk []*inbound, d time.Duration) (failed []*inbound) {
	entries := make([]types.ChangeMessageVisibilityBatchRequestEntry, len(chunk))
	for i, it := range chunk {
		entries[i] = types.ChangeMessageVisibilityBatchRequestEntry{Id: aws.String(strconv.Itoa(i)),
			ReceiptHandle: it.msg.ReceiptHandle, VisibilityTimeout: int32(d / time.Second)}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	out, err := p.queue.ChangeMessageVisibilityBatch(ctx, &sqs.ChangeMessageVisibilityBatchInput{
		QueueUrl: aws.String(p.cfg.QueueURL), Entries: entries})
	p.metrics.SQSSeconds.WithLabelValues(opChangeVisibility).Observe(time.Since(start).Seconds())
	if err != nil {
		p.log.Warn("change visibility failed", "err", err, "messageIds", messageIDs(chunk), "visibility", d.String())
		return chunk
	}
	for _, f := range out.Failed {
		if idx, err := strconv.Atoi(aws.ToString(f.Id)); err == nil && idx >= 0 && idx < len(chunk) {
			failed = append(failed, chunk[idx])
		}
	}
	return failed
}

func messageIDs(items []*inbound) []string {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = aws.ToString(it.msg.MessageId)
	}
	return ids
}

// backoffDelay is the pause before retry number attempt (1-based): exponential from lo, capped
// at hi, with "equal jitter" (half fixed, half random, r in [0,1)) so workers that failed
// together do not retry in lockstep yet never spin with a near-zero delay.
func backoffDelay(attempt int, lo, hi time.Duration, r float64) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(r*float64(d/2))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
