//go:build insertcopy

package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// memQueue is an in-process stand-in for SQS, used only by this benchmark to measure the
// processor's own pipeline (parse, batching, transactions, delete bookkeeping) when the queue
// is not the bottleneck, as real SQS, which scales out, is not. latency is added to every
// call to model the network round trip to SQS. It never redelivers: the benchmark checks
// that every vote was persisted exactly once anyway.
type memQueue struct {
	latency time.Duration

	mu      sync.Mutex
	pending []types.Message
	held    map[string]bool
}

func newMemQueue(msgs []types.Message, latency time.Duration) *memQueue {
	sent := strconv.FormatInt(time.Now().UnixMilli(), 10)
	for i := range msgs {
		msgs[i].Attributes = map[string]string{string(types.MessageSystemAttributeNameSentTimestamp): sent}
	}
	return &memQueue{latency: latency, pending: msgs, held: map[string]bool{}}
}

func (q *memQueue) wait(ctx context.Context) error {
	if q.latency <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(q.latency):
		return nil
	}
}

func (q *memQueue) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	if err := q.wait(ctx); err != nil {
		return nil, err
	}
	q.mu.Lock()
	n := min(int(in.MaxNumberOfMessages), len(q.pending))
	out := make([]types.Message, n)
	copy(out, q.pending[:n])
	q.pending = q.pending[n:]
	for _, m := range out {
		q.held[*m.ReceiptHandle] = true
	}
	q.mu.Unlock()
	if n == 0 {
		// An empty long poll: return after a short while instead of spinning.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return &sqs.ReceiveMessageOutput{Messages: out}, nil
}

func (q *memQueue) DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	if err := q.wait(ctx); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	out := &sqs.DeleteMessageBatchOutput{}
	for _, e := range in.Entries {
		delete(q.held, *e.ReceiptHandle)
		out.Successful = append(out.Successful, types.DeleteMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (q *memQueue) ChangeMessageVisibilityBatch(ctx context.Context, in *sqs.ChangeMessageVisibilityBatchInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	if err := q.wait(ctx); err != nil {
		return nil, err
	}
	out := &sqs.ChangeMessageVisibilityBatchOutput{}
	for _, e := range in.Entries {
		out.Successful = append(out.Successful, types.ChangeMessageVisibilityBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (q *memQueue) GetQueueAttributes(ctx context.Context, _ *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameVisibilityTimeout):                     "30",
		string(types.QueueAttributeNameApproximateNumberOfMessages):           strconv.Itoa(len(q.pending)),
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): strconv.Itoa(len(q.held)),
	}}, nil
}

func (q *memQueue) GetQueueUrl(context.Context, *sqs.GetQueueUrlInput, ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	return nil, errors.New("memQueue has no DLQ")
}
