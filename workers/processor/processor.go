// Package processor moves admitted votes from SQS into PostgreSQL: batch insert with
// ON CONFLICT DO NOTHING, per-candidate counts bumped in the same transaction from the rows
// actually inserted, and SQS messages deleted only after the commit. A crash at any point
// therefore either loses nothing (the message comes back) or double-counts nothing (the
// redelivered vote hits the unique key and adds no count).
package processor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

// Queue is the part of *sqs.Client the processor uses.
type Queue interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// Processor runs the receive → persist → delete loop.
type Processor struct {
	cfg     Config
	queue   Queue
	db      beginner
	log     *slog.Logger
	metrics *Metrics
}

// New wires a Processor. db is normally a *pgxpool.Pool.
func New(cfg Config, queue Queue, db beginner, log *slog.Logger, metrics *Metrics) *Processor {
	return &Processor{cfg: cfg, queue: queue, db: db, log: log, metrics: metrics}
}

// Run starts cfg.Receivers long-polling loops and returns once ctx is cancelled and every loop
// has finished the batch it was working on.
func (p *Processor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range p.cfg.Receivers {
		wg.Go(func() { p.receiveLoop(ctx, i) })
	}
	wg.Wait()
}

func (p *Processor) receiveLoop(ctx context.Context, receiver int) {
	log := p.log.With("receiver", receiver)
	in := &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(p.cfg.QueueURL),
		MaxNumberOfMessages:         p.cfg.BatchSize,
		WaitTimeSeconds:             int32(p.cfg.WaitTime / time.Second),
		VisibilityTimeout:           int32(p.cfg.VisibilityTimeout / time.Second),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameApproximateReceiveCount},
	}
	failures := 0
	pause := func() {
		failures++
		sleepCtx(ctx, backoffDelay(failures, p.cfg.BackoffMin, p.cfg.BackoffMax, rand.Float64()))
	}
	for ctx.Err() == nil {
		// The long poll in progress is not cancelled on shutdown: SQS would still hand messages
		// to the abandoned poll, and they would sit invisible for a whole visibility timeout.
		// Shutdown therefore takes up to WaitTime plus one batch.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.WaitTime+30*time.Second)
		out, err := p.queue.ReceiveMessage(rctx, in)
		cancel()
		if err != nil {
			p.metrics.ReceiveErrors.Inc()
			log.Error("receive failed", "err", err)
			pause()
			continue
		}
		if len(out.Messages) == 0 {
			if in.WaitTimeSeconds == 0 { // short polling: do not spin on an empty queue
				sleepCtx(ctx, p.cfg.BackoffMin)
			}
			continue
		}
		// Shutdown must not cut a batch in half: finish it (bounded by DBTimeout) and stop after.
		if _, err := p.HandleBatch(context.WithoutCancel(ctx), out.Messages); err != nil {
			log.Error("batch not persisted; messages will be redelivered after the visibility timeout",
				"err", err, "messages", len(out.Messages), "messageIds", messageIDs(out.Messages))
			pause()
			continue
		}
		failures = 0
	}
}

// BatchResult counts what HandleBatch did with each message.
type BatchResult struct {
	Persisted  int // inserted and counted, deleted from the queue
	Duplicates int // already stored, deleted from the queue
	Poison     int // invalid or unknown candidate, left in the queue for the dead-letter queue
}

// HandleBatch persists one received batch and deletes the messages that are safely stored.
// It returns an error only when the transaction failed; then nothing was deleted.
func (p *Processor) HandleBatch(ctx context.Context, msgs []types.Message) (BatchResult, error) {
	var res BatchResult
	p.metrics.Received.Add(float64(len(msgs)))

	// Parse. owner[i] is the index in votes of message i, or -1 for poison. A vote id seen twice
	// in one batch (the same message sent twice) maps to the first copy, whose fate it shares.
	owner := make([]int, len(msgs))
	var votes []vote
	byID := map[string]int{}
	for i, m := range msgs {
		v, err := parseVote(m)
		if err != nil {
			owner[i] = -1
			res.Poison++
			p.metrics.Poison.WithLabelValues(poisonInvalid).Inc()
			p.log.Warn("poison message left for dead-lettering", "messageId", aws.ToString(m.MessageId),
				"receiveCount", m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)],
				"requestId", stringAttr(m, contract.AttrRequestID), "err", err)
			continue
		}
		if j, ok := byID[v.ID]; ok {
			owner[i] = j
			continue
		}
		byID[v.ID] = len(votes)
		owner[i] = len(votes)
		votes = append(votes, v)
	}

	var tx txResult
	if len(votes) > 0 {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.DBTimeout)
		start := time.Now()
		var err error
		tx, err = persist(ctx, p.db, votes)
		cancel()
		if err != nil {
			p.metrics.BatchFailures.Inc()
			return BatchResult{}, err
		}
		p.metrics.CommitSeconds.Observe(time.Since(start).Seconds())
	}

	var (
		toDelete           []types.Message
		persistedRequests  = []string{} // empty, not null, in the JSON log
		duplicateRequests  = []string{}
		persistedFirstSeen = map[int]bool{}
	)
	for i, m := range msgs {
		j := owner[i]
		if j < 0 {
			continue
		}
		v := votes[j]
		if tx.unknown[pair{v.ElectionID, v.CandidateID}] {
			res.Poison++
			p.metrics.Poison.WithLabelValues(poisonUnknownCandidate).Inc()
			p.log.Warn("vote for unknown election/candidate left for dead-lettering",
				"messageId", aws.ToString(m.MessageId), "voteId", v.ID, "electionId", v.ElectionID,
				"candidateId", v.CandidateID, "requestId", v.RequestID)
			continue
		}
		toDelete = append(toDelete, m)
		if tx.inserted[v.ID] && !persistedFirstSeen[j] {
			persistedFirstSeen[j] = true
			res.Persisted++
			persistedRequests = append(persistedRequests, v.RequestID)
		} else {
			res.Duplicates++
			duplicateRequests = append(duplicateRequests, v.RequestID)
		}
	}
	p.metrics.Persisted.Add(float64(res.Persisted))
	p.metrics.Duplicates.Add(float64(res.Duplicates))
	if len(votes) > 0 {
		p.log.Info("vote batch persisted", "persisted", res.Persisted, "duplicates", res.Duplicates,
			"poison", res.Poison, "requestIds", persistedRequests, "duplicateRequestIds", duplicateRequests,
			"electionIds", tx.elections)
	}

	p.deleteMessages(ctx, toDelete)
	return res, nil
}

// deleteMessages removes committed messages. A failed delete is only logged: the message comes
// back after the visibility timeout and is then dropped as a duplicate.
func (p *Processor) deleteMessages(ctx context.Context, msgs []types.Message) {
	for start := 0; start < len(msgs); start += 10 { // DeleteMessageBatch takes at most 10 entries
		chunk := msgs[start:min(start+10, len(msgs))]
		entries := make([]types.DeleteMessageBatchRequestEntry, len(chunk))
		for i, m := range chunk {
			entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := p.queue.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(p.cfg.QueueURL), Entries: entries})
		cancel()
		if err != nil {
			p.metrics.DeleteErrors.Add(float64(len(chunk)))
			p.log.Error("delete failed; committed messages will be redelivered and dropped as duplicates",
				"err", err, "messageIds", messageIDs(chunk))
			continue
		}
		for _, f := range out.Failed {
			p.metrics.DeleteErrors.Inc()
			idx, _ := strconv.Atoi(aws.ToString(f.Id))
			p.log.Error("delete failed for one message", "messageId", aws.ToString(chunk[idx].MessageId),
				"code", aws.ToString(f.Code), "reason", aws.ToString(f.Message))
		}
	}
}

func messageIDs(msgs []types.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = aws.ToString(m.MessageId)
	}
	return ids
}

// backoffDelay is the pause before retry number attempt (1-based): exponential from lo, capped
// at hi, with "equal jitter" (half fixed, half random, r in [0,1)) so receivers that failed
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
