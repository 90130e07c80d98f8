package enqueue

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

// Thirty concurrent votes through the real SDK client into a real ElasticMQ: every Enqueue is
// acknowledged, and all thirty messages come back with their attributes.
func TestBatcherAgainstElasticMQ(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ElasticMQ")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	mq, err := devstack.StartElasticMQ(ctx, port)
	if err != nil {
		t.Fatalf("start ElasticMQ: %v", err)
	}
	defer mq.Stop()

	client := sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(mq.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("local", "local", ""),
	})
	queue := mq.QueueURL("votes")
	var mu sync.Mutex
	var sizes []int
	b := NewBatcher(client, queue, BatchOptions{Linger: 20 * time.Millisecond, Deadline: 10 * time.Second,
		OnBatch: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() }})
	defer b.Close()

	for i, err := range enqueueAll(t, b, 30, 30*time.Second) {
		if err != nil {
			t.Errorf("vote %d: %v", i, err)
		}
	}
	mu.Lock()
	batched := len(sizes)
	mu.Unlock()
	if batched >= 30 {
		t.Errorf("30 votes took %d SendMessageBatch calls: no coalescing", batched)
	}

	want := map[string]contract.QueuedVote{}
	for i := range 30 {
		want[vote(i).VoteID] = vote(i)
	}
	got := map[string]bool{}
	for len(got) < 30 && ctx.Err() == nil {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(queue),
			MaxNumberOfMessages: 10, WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"}})
		if err != nil {
			t.Fatalf("ReceiveMessage: %v", err)
		}
		for _, m := range out.Messages {
			var v contract.QueuedVote
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &v); err != nil {
				t.Fatalf("body %q: %v", aws.ToString(m.Body), err)
			}
			w, ok := want[v.VoteID]
			if !ok || got[v.VoteID] {
				t.Errorf("unexpected or repeated message %+v", v)
				continue
			}
			got[v.VoteID] = true
			if v != w {
				t.Errorf("message %+v, want %+v", v, w)
			}
			if rid := aws.ToString(m.MessageAttributes[contract.AttrRequestID].StringValue); rid != w.RequestID {
				t.Errorf("vote %s: x-request-id attribute %q, want %q", v.VoteID, rid, w.RequestID)
			}
			if reg := aws.ToString(m.MessageAttributes[contract.AttrRegion].StringValue); reg != "eu-west-1" {
				t.Errorf("vote %s: region attribute %q", v.VoteID, reg)
			}
		}
	}
	if len(got) != 30 {
		t.Fatalf("received %d of 30 votes", len(got))
	}
}
