package processor

import (
	"context"
	"fmt"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

// ReplayQueue is the part of *sqs.Client that replay-dlq uses.
type ReplayQueue interface {
	Queue
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// ReplayedMessage is one message moved from the DLQ back to the queue.
type ReplayedMessage struct {
	DLQMessageID string `json:"dlqMessageId"`
	NewMessageID string `json:"newMessageId"`
	// ReceiveCount is how often it was received before it was dead-lettered.
	ReceiveCount string `json:"receiveCount,omitempty"`
	// The vote it carries, when its body parses (poison bodies are moved too: maybe the
	// cause was a parser bug that is fixed now).
	VoteID      string `json:"voteId,omitempty"`
	ElectionID  string `json:"electionId,omitempty"`
	CandidateID string `json:"candidateId,omitempty"`
	RequestID   string `json:"requestId,omitempty"`
	ParseError  string `json:"parseError,omitempty"`
}

// ReplayReport is what one replay did.
type ReplayReport struct {
	From     string            `json:"from"`
	To       string            `json:"to"`
	Moved    int               `json:"moved"`
	Failed   int               `json:"failed"`
	Messages []ReplayedMessage `json:"-"` // streamed one per line by the CLI, not repeated in the summary
}

// ReplayDLQ moves messages from the dead-letter queue `from` back to `to`, to be run once the
// cause of the poison is fixed (e.g. the missing candidate exists now). Each message is sent
// with its body and message attributes (the correlation id travels on) and deleted from the DLQ
// only after SQS acknowledged the send, so a crash mid-replay duplicates at worst, and the
// processor drops duplicates. It moves at most limit messages, or, with limit 0, as many as the
// DLQ held when it started, so that a message that fails again and returns to the DLQ while the
// replay runs is not chased forever. onMoved, if set, sees each moved message as it goes.
func ReplayDLQ(ctx context.Context, q ReplayQueue, from, to string, limit int, onMoved func(ReplayedMessage)) (ReplayReport, error) {
	rep := ReplayReport{From: from, To: to}
	if limit <= 0 {
		visible, inFlight, err := approxDepth(ctx, q, from)
		if err != nil {
			return rep, fmt.Errorf("DLQ depth: %w", err)
		}
		limit = visible + inFlight
	}
	empty := 0
	for rep.Moved+rep.Failed < limit && empty < 3 {
		out, err := q.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:              aws.String(from),
			MaxNumberOfMessages:   int32(min(10, limit-rep.Moved-rep.Failed)),
			WaitTimeSeconds:       1,
			VisibilityTimeout:     60, // a failed send leaves the message in the DLQ, visible again in a minute
			MessageAttributeNames: []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{
				types.MessageSystemAttributeNameApproximateReceiveCount},
		})
		if err != nil {
			return rep, fmt.Errorf("receive from DLQ: %w", err)
		}
		if len(out.Messages) == 0 {
			empty++ // in flight elsewhere, or SQS sampled empty servers: try a few times
			continue
		}
		empty = 0
		if err := replayChunk(ctx, q, from, to, out.Messages, &rep, onMoved); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func replayChunk(ctx context.Context, q ReplayQueue, from, to string, msgs []types.Message, rep *ReplayReport, onMoved func(ReplayedMessage)) error {
	entries := make([]types.SendMessageBatchRequestEntry, len(msgs))
	for i, m := range msgs {
		attrs := make(map[string]types.MessageAttributeValue, len(m.MessageAttributes))
		for k, a := range m.MessageAttributes {
			attrs[k] = types.MessageAttributeValue{DataType: a.DataType, StringValue: a.StringValue, BinaryValue: a.BinaryValue}
		}
		entries[i] = types.SendMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), MessageBody: m.Body, MessageAttributes: attrs}
	}
	sent, err := q.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(to), Entries: entries})
	if err != nil {
		return fmt.Errorf("send to %s: %w", to, err)
	}
	rep.Failed += len(sent.Failed)
	var del []types.DeleteMessageBatchRequestEntry
	moved := make([]ReplayedMessage, 0, len(sent.Successful))
	for _, s := range sent.Successful {
		i, err := strconv.Atoi(aws.ToString(s.Id))
		if err != nil || i < 0 || i >= len(msgs) {
			return fmt.Errorf("SendMessageBatch answered unknown entry id %q", aws.ToString(s.Id))
		}
		m := msgs[i]
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: s.Id, ReceiptHandle: m.ReceiptHandle})
		rm := ReplayedMessage{DLQMessageID: aws.ToString(m.MessageId), NewMessageID: aws.ToString(s.MessageId),
			ReceiveCount: receiveCount(m), RequestID: stringAttr(m, contract.AttrRequestID)}
		if v, err := parseVote(m); err == nil {
			rm.VoteID, rm.ElectionID, rm.CandidateID = v.ID, v.ElectionID, v.CandidateID
		} else {
			rm.ParseError = err.Error()
		}
		moved = append(moved, rm)
	}
	// Sent is moved, whatever the delete below does: report it.
	for _, rm := range moved {
		rep.Moved++
		rep.Messages = append(rep.Messages, rm)
		if onMoved != nil {
			onMoved(rm)
		}
	}
	if len(del) > 0 {
		// A message sent but not deleted is replayed again next time; the processor drops the
		// second copy as a duplicate. Report it rather than pretend.
		out, err := q.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(from), Entries: del})
		if err != nil {
			return fmt.Errorf("delete %d replayed messages from the DLQ (they will be replayed again, harmlessly): %w", len(del), err)
		}
		if len(out.Failed) > 0 {
			return fmt.Errorf("%d replayed messages could not be deleted from the DLQ (they will be replayed again, harmlessly): %s",
				len(out.Failed), aws.ToString(out.Failed[0].Message))
		}
	}
	return nil
}
