package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

const queueURL = "http://sqs.test/000000000000/votes"

// fakeSender answers SendMessageBatch like SQS: per entry, Successful or Failed. failEntry
// decides which entries fail (given the vote id and how often that vote was sent before),
// callErr fails a whole call. It records every call and how often each vote was acked.
type fakeSender struct {
	mu        sync.Mutex
	calls     []*sqs.SendMessageBatchInput
	sends     map[string]int // vote id → times sent
	acks      map[string]int // vote id → times acknowledged
	failEntry func(voteID string, sentBefore int) bool
	callErr   func(call int) error
	hold      chan struct{} // when set, every call waits for it to close
	delay     time.Duration // every call takes this long
	inFlight  atomic.Int32
	maxFlight atomic.Int32
	hadDL     atomic.Bool
}

func newFakeSender() *fakeSender {
	return &fakeSender{sends: map[string]int{}, acks: map[string]int{}}
}

func (f *fakeSender) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxFlight.Load()
		if n <= m || f.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if _, ok := ctx.Deadline(); ok {
		f.hadDL.Store(true)
	}
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, in)
	if f.callErr != nil {
		if err := f.callErr(len(f.calls)); err != nil {
			return nil, err
		}
	}
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		var v contract.QueuedVote
		if err := json.Unmarshal([]byte(aws.ToString(e.MessageBody)), &v); err != nil {
			return nil, fmt.Errorf("fake: body %q: %v", aws.ToString(e.MessageBody), err)
		}
		before := f.sends[v.VoteID]
		f.sends[v.VoteID]++
		if f.failEntry != nil && f.failEntry(v.VoteID, before) {
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InternalError"),
				Message: aws.String("try again"), SenderFault: false})
			continue
		}
		f.acks[v.VoteID]++
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id,
			MessageId: aws.String("msg-" + v.VoteID), MD5OfMessageBody: aws.String("x")})
	}
	return out, nil
}

func (f *fakeSender) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []int
	for _, c := range f.calls {
		s = append(s, len(c.Entries))
	}
	return s
}

func vote(i int) contract.QueuedVote {
	return contract.QueuedVote{
		VoteID:      fmt.Sprintf("00000000-0000-7000-8000-%012d", i),
		ElectionID:  "3f1c2a9e-8b4d-4c6e-9f0a-1b2c3d4e5f60",
		CandidateID: "a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c3d",
		UserID:      "auth0|viewer-" + strconv.Itoa(i),
		Region:      "eu-west-1",
		RequestID:   fmt.Sprintf("req-%d", i),
		AcceptedAt:  time.Date(2026, 1, 15, 21, 0, 0, i, time.UTC),
	}
}

// enqueueAll runs n concurrent Enqueues and returns their errors by vote number, failing the
// test if they do not all return within limit.
func enqueueAll(t *testing.T, b *Batcher, n int, limit time.Duration) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Enqueue(context.Background(), vote(i))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%d Enqueues did not all return within %v", n, limit)
	}
	return errs
}

func TestBatchesOfAtMostTen(t *testing.T) {
	s := newFakeSender()
	var mu sync.Mutex
	var reported []int
	b := NewBatcher(s, queueURL, BatchOptions{Linger: 100 * time.Millisecond, OnBatch: func(n int) {
		mu.Lock()
		reported = append(reported, n)
		mu.Unlock()
	}})
	defer b.Close()

	for i, err := range enqueueAll(t, b, 25, 5*time.Second) {
		if err != nil {
			t.Errorf("vote %d: %v", i, err)
		}
	}
	sizes := s.batchSizes()
	total, full := 0, false
	for _, n := range sizes {
		if n < 1 || n > 10 {
			t.Errorf("a batch of %d entries (sizes %v)", n, sizes)
		}
		total += n
		full = full || n == 10
	}
	if total != 25 || !full {
		t.Errorf("batch sizes %v: want 25 entries in batches of at most 10, at least one full", sizes)
	}
	for i := range 25 {
		if id := vote(i).VoteID; s.acks[id] != 1 || s.sends[id] != 1 {
			t.Errorf("vote %d sent %d and acked %d times, want once", i, s.sends[id], s.acks[id])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(reported) != fmt.Sprint(sizes) {
		t.Errorf("OnBatch reported %v, sender saw %v", reported, sizes)
	}
	if !s.hadDL.Load() {
		t.Error("SendMessageBatch ran without a deadline")
	}
	for _, c := range s.calls {
		if aws.ToString(c.QueueUrl) != queueURL {
			t.Errorf("queue url = %q", aws.ToString(c.QueueUrl))
		}
	}
}

// Each Enqueue returns only once its own entry is acknowledged.
func TestEnqueueWaitsForItsAck(t *testing.T) {
	s := newFakeSender()
	s.hold = make(chan struct{})
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, Deadline: 5 * time.Second})
	defer b.Close()
	done := make(chan error, 1)
	go func() { done <- b.Enqueue(context.Background(), vote(1)) }()
	select {
	case err := <-done:
		t.Fatalf("Enqueue returned %v before SQS answered", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(s.hold)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue did not return after the ack")
	}
}

// SQS accepts part of a batch: only the failed entries are sent again, and every caller
// succeeds once its entry is in.
func TestPartialFailureResendsOnlyFailed(t *testing.T) {
	s := newFakeSender()
	failing := map[string]bool{vote(1).VoteID: true, vote(4).VoteID: true, vote(7).VoteID: true}
	s.failEntry = func(id string, before int) bool { return failing[id] && before == 0 }
	// A long linger so the ten votes form one batch.
	b := NewBatcher(s, queueURL, BatchOptions{Linger: 200 * time.Millisecond, Deadline: 5 * time.Second})
	defer b.Close()
	for i, err := range enqueueAll(t, b, 10, 5*time.Second) {
		if err != nil {
			t.Errorf("vote %d: %v", i, err)
		}
	}
	sizes := s.batchSizes()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) != 2 || len(s.calls[0].Entries) != 10 {
		t.Fatalf("calls with %v entries, want [10 3]", sizes)
	}
	var resent []string
	ids := map[string]bool{}
	for _, e := range s.calls[1].Entries {
		var v contract.QueuedVote
		_ = json.Unmarshal([]byte(aws.ToString(e.MessageBody)), &v)
		resent = append(resent, v.VoteID)
		if ids[aws.ToString(e.Id)] {
			t.Errorf("entry id %q twice in one batch", aws.ToString(e.Id))
		}
		ids[aws.ToString(e.Id)] = true
		if e.MessageAttributes[contract.AttrRequestID].StringValue == nil {
			t.Error("a resent entry lost its attributes")
		}
	}
	if len(resent) != 3 {
		t.Fatalf("resent %v, want the 3 failed votes", resent)
	}
	for _, id := range resent {
		if !failing[id] {
			t.Errorf("resent %s, which had been acknowledged", id)
		}
	}
	for i := range 10 {
		if id := vote(i).VoteID; s.acks[id] != 1 {
			t.Errorf("vote %d acked %d times, want 1", i, s.acks[id])
		}
	}
}

// A failed call is retried as a whole.
func TestCallErrorRetried(t *testing.T) {
	s := newFakeSender()
	s.callErr = func(call int) error {
		if call == 1 {
			return errors.New("connection reset")
		}
		return nil
	}
	b := NewBatcher(s, queueURL, BatchOptions{Linger: 50 * time.Millisecond, Deadline: 5 * time.Second})
	defer b.Close()
	for i, err := range enqueueAll(t, b, 5, 5*time.Second) {
		if err != nil {
			t.Errorf("vote %d: %v", i, err)
		}
	}
	if sizes := s.batchSizes(); len(sizes) < 2 {
		t.Errorf("calls %v: the failed call was not retried", sizes)
	}
	for i := range 5 {
		if s.acks[vote(i).VoteID] != 1 {
			t.Errorf("vote %d acked %d times", i, s.acks[vote(i).VoteID])
		}
	}
}

// SQS keeps failing: every caller gets an error once its deadline has passed, never a nil.
func TestPersistentFailureErrors(t *testing.T) {
	s := newFakeSender()
	s.callErr = func(int) error { return errors.New("sqs: 503 service unavailable") }
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, Deadline: 300 * time.Millisecond})
	defer b.Close()
	start := time.Now()
	for i, err := range enqueueAll(t, b, 12, 10*time.Second) {
		if err == nil {
			t.Errorf("vote %d: nil error although SQS never accepted it", i)
		} else if !strings.Contains(err.Error(), "not be queued") || !strings.Contains(err.Error(), vote(i).VoteID) {
			t.Errorf("vote %d: error %q does not say which vote may not be queued", i, err)
		} else if notSent(err) {
			// A call that failed without an answer may have been stored: releasing the viewer's
			// reservation now could let a second vote in beside it.
			t.Errorf("vote %d: a failed call is reported as certainly not sent", i)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("callers got their errors after %v with a 300 ms deadline", el)
	}
	if len(s.batchSizes()) < 2 {
		t.Errorf("calls %v: no retry within the deadline", s.batchSizes())
	}
}

// One entry keeps failing: its caller gets SQS's reason, the others succeed.
func TestOneEntryKeepsFailing(t *testing.T) {
	s := newFakeSender()
	bad := vote(3).VoteID
	s.failEntry = func(id string, _ int) bool { return id == bad }
	b := NewBatcher(s, queueURL, BatchOptions{Linger: 50 * time.Millisecond, Deadline: 300 * time.Millisecond})
	defer b.Close()
	for i, err := range enqueueAll(t, b, 6, 10*time.Second) {
		switch {
		case i == 3 && (err == nil || !strings.Contains(err.Error(), "InternalError") || !notSent(err)):
			t.Errorf("failing vote: %v, want a not-sent error naming InternalError", err)
		case i != 3 && err != nil:
			t.Errorf("vote %d: %v", i, err)
		}
	}
	if s.acks[bad] != 0 || s.sends[bad] < 2 {
		t.Errorf("failing vote sent %d times, acked %d", s.sends[bad], s.acks[bad])
	}
}

func TestAttributesAndBody(t *testing.T) {
	s := newFakeSender()
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond})
	defer b.Close()
	v := vote(42)
	if err := b.Enqueue(context.Background(), v); err != nil {
		t.Fatal(err)
	}
	noReq := vote(43)
	noReq.RequestID = ""
	if err := b.Enqueue(context.Background(), noReq); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) != 2 {
		t.Fatalf("%d calls", len(s.calls))
	}
	e := s.calls[0].Entries[0]
	var got contract.QueuedVote
	if err := json.Unmarshal([]byte(aws.ToString(e.MessageBody)), &got); err != nil || got != v {
		t.Errorf("body %s decodes to %+v (%v), want %+v", aws.ToString(e.MessageBody), got, err, v)
	}
	want := map[string]string{contract.AttrRequestID: "req-42", contract.AttrRegion: "eu-west-1"}
	if len(e.MessageAttributes) != len(want) {
		t.Errorf("attributes %v, want %v", e.MessageAttributes, want)
	}
	for k, val := range want {
		a, ok := e.MessageAttributes[k]
		if !ok || aws.ToString(a.DataType) != "String" || aws.ToString(a.StringValue) != val {
			t.Errorf("attribute %s = %+v, want String %q", k, a, val)
		}
	}
	e2 := s.calls[1].Entries[0]
	if _, ok := e2.MessageAttributes[contract.AttrRequestID]; ok {
		t.Error("an empty request id became an attribute (SQS refuses empty values)")
	}
	if aws.ToString(e2.MessageAttributes[contract.AttrRegion].StringValue) != "eu-west-1" {
		t.Error("region attribute missing")
	}
}

// Close sends what is waiting for its linger and answers every caller.
func TestCloseFlushes(t *testing.T) {
	s := newFakeSender()
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Hour, Deadline: 5 * time.Second})
	errs := make(chan error, 3)
	for i := range 3 {
		go func() { errs <- b.Enqueue(context.Background(), vote(i)) }()
	}
	time.Sleep(100 * time.Millisecond) // the three wait for company
	if n := len(s.batchSizes()); n != 0 {
		t.Fatalf("%d calls before the linger ended", n)
	}
	b.Close()
	for range 3 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Enqueue: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an Enqueue did not return after Close")
		}
	}
	if sizes := s.batchSizes(); fmt.Sprint(sizes) != "[3]" {
		t.Errorf("batches %v, want one of 3", sizes)
	}
}

// After Close, Enqueue says so instead of waiting forever.
func TestEnqueueAfterClose(t *testing.T) {
	b := NewBatcher(newFakeSender(), queueURL, BatchOptions{Linger: time.Millisecond})
	b.Close()
	for i := range 20 {
		done := make(chan error, 1)
		go func() { done <- b.Enqueue(context.Background(), vote(i)) }()
		select {
		case err := <-done:
			if err == nil || !notSent(err) {
				t.Errorf("Enqueue %d after Close = %v, want a not-sent error", i, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("Enqueue %d after Close never returned", i)
		}
	}
}

// Votes still waiting in the batcher's channel when Close is called are sent or refused,
// never abandoned with their callers blocked.
func TestCloseAnswersQueuedVotes(t *testing.T) {
	s := newFakeSender()
	s.hold = make(chan struct{})
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, MaxInFlight: 1, Deadline: 5 * time.Second})
	var wg sync.WaitGroup
	var returned atomic.Int32
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = b.Enqueue(context.Background(), vote(i))
			returned.Add(1)
		}()
	}
	time.Sleep(100 * time.Millisecond) // one batch in flight, one waiting for a slot, the rest in the channel
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	time.Sleep(20 * time.Millisecond)
	close(s.hold)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("only %d of 40 Enqueues returned after Close", returned.Load())
	}
	<-closed
}

// At most MaxInFlight calls run at once.
func TestMaxInFlight(t *testing.T) {
	s := newFakeSender()
	s.delay = 20 * time.Millisecond
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, MaxInFlight: 2, Deadline: 5 * time.Second})
	defer b.Close()
	for i, err := range enqueueAll(t, b, 60, 10*time.Second) {
		if err != nil {
			t.Errorf("vote %d: %v", i, err)
		}
	}
	if m := s.maxFlight.Load(); m > 2 || m < 1 {
		t.Errorf("%d calls in flight at once, want at most 2", m)
	}
}

func notSent(err error) bool {
	var ns interface{ NotSent() bool }
	return errors.As(err, &ns) && ns.NotSent()
}

// An entry refused by SQS on one call and lost with a failed call on another may be stored:
// it is not reported as certainly not sent.
func TestRefusedThenCallFailedIsInDoubt(t *testing.T) {
	s := newFakeSender()
	s.failEntry = func(string, int) bool { return true }
	s.callErr = func(call int) error {
		if call == 2 {
			return errors.New("connection reset")
		}
		return nil
	}
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, Deadline: 400 * time.Millisecond})
	defer b.Close()
	err := b.Enqueue(context.Background(), vote(1))
	if err == nil || notSent(err) {
		t.Errorf("err = %v, want an in-doubt error", err)
	}
}

// A call whose connection could not be made never reached SQS: its entries are certainly not
// queued, so their reservations can be released at once.
func TestRefusedConnectionIsNotSent(t *testing.T) {
	s := newFakeSender()
	s.callErr = func(int) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}
	}
	b := NewBatcher(s, queueURL, BatchOptions{Linger: time.Millisecond, Deadline: 200 * time.Millisecond})
	defer b.Close()
	if err := b.Enqueue(context.Background(), vote(1)); err == nil || !notSent(err) {
		t.Errorf("err = %v, want a not-sent error", err)
	}
}
