package processor

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tvvote/voting/contract"
)

func message(requestID, traceParent string) types.Message {
	attrs := map[string]types.MessageAttributeValue{
		contract.AttrRequestID: {DataType: aws.String("String"), StringValue: aws.String(requestID)},
	}
	if traceParent != "" {
		attrs[contract.AttrTraceParent] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(traceParent)}
	}
	return types.Message{Body: aws.String("{}"), MessageAttributes: attrs}
}

// A batch's span starts at its oldest receive, ends after its last delete, and links to the
// edge span of every vote that carries one, with the vote's request id on the link.
func TestBatchSpanLinksEveryTracedVote(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	p := &Processor{}
	p.TraceWith(tp)
	received := time.Now().Add(-time.Second)
	batch := []*inbound{
		{msg: message("req-1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"), receivedAt: received},
		{msg: message("req-2", ""), receivedAt: time.Now()},
		{msg: message("req-3", "garbage"), receivedAt: time.Now()},
	}
	_, span := p.startBatchSpan(context.Background(), batch)
	done := newBatchDone(span, 2)
	done.jobDone()
	if len(rec.Ended()) != 0 {
		t.Fatal("span ended before its last delete")
	}
	done.jobDone()
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	s := ended[0]
	if !s.StartTime().Equal(received) {
		t.Errorf("span starts %v, want the oldest receive %v", s.StartTime(), received)
	}
	links := s.Links()
	if len(links) != 1 {
		t.Fatalf("links %v, want one (the valid traceparent)", links)
	}
	if got := links[0].SpanContext.TraceID().String(); got != "0af7651916cd43dd8448eb211c80319c" {
		t.Errorf("link trace %s", got)
	}
	if got := links[0].SpanContext.SpanID().String(); got != "b7ad6b7169203331" {
		t.Errorf("link span %s", got)
	}
	var rid string
	for _, a := range links[0].Attributes {
		if a.Key == "requestId" {
			rid = a.Value.AsString()
		}
	}
	if rid != "req-1" {
		t.Errorf("link requestId %q, want req-1", rid)
	}
}

// Without a tracer the batch path makes no spans and needs no provider.
func TestBatchSpanWithoutTracerIsNoop(t *testing.T) {
	p := &Processor{}
	_, span := p.startBatchSpan(context.Background(), []*inbound{{msg: message("r", "")}})
	if span.SpanContext().IsValid() || span.IsRecording() {
		t.Fatal("a span without a tracer")
	}
	newBatchDone(span, 0)
}
