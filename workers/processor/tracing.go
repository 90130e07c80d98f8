package processor

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/tracing"
)

// TracerName names the processor's spans' instrumentation scope.
const TracerName = "github.com/tvvote/voting/workers/processor"

// TraceWith makes the processor write a span per batch to tp; without it, it writes none.
func (p *Processor) TraceWith(tp trace.TracerProvider) { p.tracer = tp.Tracer(TracerName) }

func (p *Processor) tracerOrNoop() trace.Tracer {
	if p.tracer == nil {
		return noop.NewTracerProvider().Tracer(TracerName)
	}
	return p.tracer
}

// startBatchSpan opens the batch's span at the receive of its oldest message. A batch holds
// votes of many requests, so it has no parent: it links to each vote's edge span (the
// traceparent the edge put on the message), with the vote's request id on the link.
func (p *Processor) startBatchSpan(ctx context.Context, batch []*inbound) (context.Context, trace.Span) {
	tracer := p.tracerOrNoop()
	if _, off := tracer.(noop.Tracer); off {
		return tracer.Start(ctx, "vote batch")
	}
	oldest := time.Now()
	links := make([]trace.Link, 0, len(batch))
	for _, it := range batch {
		if it.receivedAt.Before(oldest) {
			oldest = it.receivedAt
		}
		sc, ok := tracing.ParseTraceParent(stringAttr(it.msg, contract.AttrTraceParent))
		if !ok {
			continue
		}
		links = append(links, trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{
			attribute.String("requestId", stringAttr(it.msg, contract.AttrRequestID)),
			attribute.String("voteId", it.vote.ID),
		}})
	}
	return tracer.Start(ctx, "vote batch", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(oldest),
		trace.WithLinks(links...), trace.WithAttributes(
			attribute.String("messaging.system", "aws_sqs"),
			attribute.String("messaging.operation.type", "process"),
			attribute.Int("messaging.batch.message_count", len(batch))))
}

// batchDone ends a batch's span once its last post-commit SQS job (deletes, poison release)
// has run: the span covers receive → commit → delete.
type batchDone struct {
	span    trace.Span
	pending atomic.Int32
}

func newBatchDone(span trace.Span, jobs int) *batchDone {
	d := &batchDone{span: span}
	d.pending.Store(int32(jobs))
	if jobs == 0 {
		span.End()
	}
	return d
}

func (d *batchDone) jobDone() {
	if d.pending.Add(-1) == 0 {
		d.span.End()
	}
}

// recordOutcome notes the commit on the batch's span.
func recordOutcome(span trace.Span, out outcome, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.AddEvent("committed", trace.WithAttributes(
		attribute.Int("persisted", out.result.Persisted), attribute.Int("duplicates", out.result.Duplicates),
		attribute.Int("conflicts", out.result.Conflicts), attribute.Int("poison", out.result.Poison)))
}
