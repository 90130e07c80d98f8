package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

// maxBatch is SQS's limit of entries per SendMessageBatch.
const maxBatch = 10

// BatchSender is the part of the SQS client the Batcher uses.
type BatchSender interface {
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// BatchOptions tune a Batcher.
type BatchOptions struct {
	// Linger is how long the first vote of a batch waits for company before it is sent.
	Linger time.Duration
	// Deadline bounds one vote's enqueue, retries of failed entries included.
	Deadline time.Duration
	// MaxInFlight caps concurrent SendMessageBatch calls.
	MaxInFlight int
	// OnBatch, if set, is told the size of every batch sent (for metrics).
	OnBatch func(size int)
}

// Batcher coalesces concurrent votes into SendMessageBatch calls. Each Enqueue returns only
// when its own entry was acknowledged by SQS, or with an error once its deadline passed.
type Batcher struct {
	sender   BatchSender
	queueURL string
	opts     BatchOptions
	in       chan *pending
	slots    chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	// mu orders Enqueue's send on `in` before Close: after Close nothing enters `in`.
	mu     sync.RWMutex
	closed bool
}

type pending struct {
	entry    types.SendMessageBatchRequestEntry
	deadline time.Time
	done     chan error
	// maybeSent: a call carrying this entry failed without saying which entries SQS stored.
	maybeSent bool
}

// NotSentError is an enqueue failure after which the vote is certainly not in the queue: it
// was never sent, or SQS answered that it refused the entry every time it was sent.
type NotSentError struct{ Err error }

func (e *NotSentError) Error() string { return e.Err.Error() }
func (e *NotSentError) Unwrap() error { return e.Err }

// NotSent tells the caller that releasing the vote's reservation is safe.
func (e *NotSentError) NotSent() bool { return true }

// NewBatcher starts the batching goroutine; Close stops it.
func NewBatcher(sender BatchSender, queueURL string, o BatchOptions) *Batcher {
	if o.Linger <= 0 {
		o.Linger = 5 * time.Millisecond
	}
	if o.Deadline <= 0 {
		o.Deadline = 1500 * time.Millisecond
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	b := &Batcher{sender: sender, queueURL: queueURL, opts: o, in: make(chan *pending, 4096),
		slots: make(chan struct{}, o.MaxInFlight), stop: make(chan struct{})}
	b.wg.Add(1)
	go b.collect()
	return b
}

// Enqueue queues one vote and waits for its acknowledgement. It deliberately does not give
// up when ctx ends while the entry is in flight: the caller must know for sure whether the
// vote is in the queue before it answers the viewer or releases the dedup key.
func (b *Batcher) Enqueue(ctx context.Context, v contract.QueuedVote) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(b.opts.Deadline)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d // the caller's budget bounds the retries too
	}
	p := &pending{entry: types.SendMessageBatchRequestEntry{
		MessageBody:       aws.String(string(body)),
		MessageAttributes: attributes(v),
	}, deadline: deadline, done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return &NotSentError{errors.New("enqueue: batcher closed")}
	}
	select {
	case b.in <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return &NotSentError{fmt.Errorf("vote %s not queued: %w", v.VoteID, ctx.Err())}
	}
	if err := <-p.done; err != nil {
		var ns *NotSentError
		if errors.As(err, &ns) {
			return &NotSentError{fmt.Errorf("vote %s not queued: %w", v.VoteID, ns.Err)}
		}
		return fmt.Errorf("vote %s may not be queued: %w", v.VoteID, err)
	}
	return nil
}

// Close stops accepting votes, sends those already accepted and waits for every batch.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
}

func (b *Batcher) collect() {
	defer b.wg.Done()
	var batch []*pending
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		timer.Stop()
		b.slots <- struct{}{}
		b.wg.Add(1)
		go b.send(batch)
		batch = nil
	}
	for {
		select {
		case p := <-b.in:
			batch = append(batch, p)
			if len(batch) == 1 {
				timer.Reset(b.opts.Linger)
			}
			if len(batch) == maxBatch {
				flush()
			}
		case <-timer.C:
			flush()
		case <-b.stop:
			// Nothing enters `in` any more (Close holds the lock first): drain what did.
			for {
				select {
				case p := <-b.in:
					batch = append(batch, p)
					if len(batch) == maxBatch {
						flush()
					}
				default:
					flush()
					return
				}
			}
		}
	}
}

// send delivers one batch, retrying failed entries until each is acknowledged or past its
// deadline. SQS may accept part of a batch; only the failed entries are sent again.
func (b *Batcher) send(batch []*pending) {
	defer b.wg.Done()
	defer func() { <-b.slots }()
	if b.opts.OnBatch != nil {
		b.opts.OnBatch(len(batch))
	}
	backoff := 20 * time.Millisecond
	for len(batch) > 0 {
		deadline := batch[0].deadline
		for _, p := range batch[1:] {
			if p.deadline.Before(deadline) {
				deadline = p.deadline
			}
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		entries := make([]types.SendMessageBatchRequestEntry, len(batch))
		for i, p := range batch {
			entries[i] = p.entry
			entries[i].Id = aws.String(strconv.Itoa(i))
		}
		out, err := b.sender.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(b.queueURL), Entries: entries})
		cancel()
		var retry []*pending
		if err != nil {
			retry = batch
			if !neverSent(err) {
				for _, p := range batch {
					p.maybeSent = true
				}
			}
		} else {
			acked := make(map[string]bool, len(out.Successful))
			for _, s := range out.Successful {
				if s.MessageId != nil {
					acked[aws.ToString(s.Id)] = true
				}
			}
			for i, p := range batch {
				if acked[strconv.Itoa(i)] {
					p.done <- nil
				} else {
					retry = append(retry, p)
				}
			}
			if len(retry) > 0 {
				err = fmt.Errorf("%d of %d entries failed: %s", len(retry), len(batch), failureReasons(out.Failed))
			}
		}
		next := make([]*pending, 0, len(retry))
		now := time.Now()
		for _, p := range retry {
			if now.Add(backoff).Before(p.deadline) {
				next = append(next, p)
			} else {
				p.done <- failure(p, err)
			}
		}
		batch = next
		if len(batch) > 0 {
			time.Sleep(backoff)
			backoff *= 2
		}
	}
}

// neverSent reports a call error that proves the request did not leave: the connection to
// SQS could not be made. Anything later (a reset, a timeout, an error status) may come after
// SQS stored the batch.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// failure is the error an entry's Enqueue returns once it ran out of time.
func failure(p *pending, err error) error {
	if p.maybeSent {
		return err
	}
	return &NotSentError{err}
}

func failureReasons(failed []types.BatchResultErrorEntry) string {
	if len(failed) == 0 {
		return "no reason given"
	}
	return aws.ToString(failed[0].Code) + ": " + aws.ToString(failed[0].Message)
}

func attributes(v contract.QueuedVote) map[string]types.MessageAttributeValue {
	attrs := map[string]types.MessageAttributeValue{
		contract.AttrRegion: {DataType: aws.String("String"), StringValue: aws.String(v.Region)},
	}
	if v.RequestID != "" {
		attrs[contract.AttrRequestID] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v.RequestID)}
	}
	if v.TraceParent != "" {
		attrs[contract.AttrTraceParent] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v.TraceParent)}
	}
	return attrs
}
