// Package enqueue sends admitted votes to SQS and returns only once SQS acknowledged them.
package enqueue

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

// SQS is the votes queue.
type SQS struct {
	client   *sqs.Client
	queueURL string
}

// NewSQS wraps a client for one queue.
func NewSQS(client *sqs.Client, queueURL string) *SQS {
	return &SQS{client: client, queueURL: queueURL}
}

// Enqueue sends one vote with its correlation id and region as message attributes.
func (q *SQS) Enqueue(ctx context.Context, v contract.QueuedVote) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	attrs := map[string]types.MessageAttributeValue{
		contract.AttrRegion: {DataType: aws.String("String"), StringValue: aws.String(v.Region)},
	}
	if v.RequestID != "" {
		attrs[contract.AttrRequestID] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v.RequestID)}
	}
	out, err := q.client.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:          aws.String(q.queueURL),
		MessageBody:       aws.String(string(body)),
		MessageAttributes: attrs,
	})
	if err != nil {
		return fmt.Errorf("sqs send vote %s: %w", v.VoteID, err)
	}
	if out.MessageId == nil {
		return fmt.Errorf("sqs send vote %s: no message id in the acknowledgement", v.VoteID)
	}
	return nil
}
