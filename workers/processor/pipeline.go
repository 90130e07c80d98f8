package processor

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultQueueVisibility is SQS's default visibility timeout, assumed when the queue's own
// setting cannot be read.
const defaultQueueVisibility = 30 * time.Second

// Run receives, persists and deletes until ctx is cancelled, then shuts down in order:
// receivers finish their long poll (cancelling it would let SQS hand messages to a request
// nobody reads, hiding them for a visibility timeout), writers commit what they hold, deleters
// delete what was committed. If that takes longer than ShutdownTimeout, the work in hand is
// abandoned: open transactions roll back and held messages are made visible again at once.
func (p *Processor) Run(ctx context.Context) {
	p.resolveQueue(ctx)

	// workCtx outlives ctx by at most ShutdownTimeout: it bounds transactions and SQS calls
	// during the drain.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopAfter := context.AfterFunc(ctx, func() {
		p.log.Info("shutdown requested; finishing the batches in hand", "timeout", p.cfg.ShutdownTimeout.String())
		time.AfterFunc(p.cfg.ShutdownTimeout, cancelWork)
	})
	defer stopAfter()

	items := make(chan *inbound, p.cfg.BatchMaxMessages)
	jobs := make(chan sqsJob, 4*p.cfg.Deleters)

	var receivers, writers, deleters, background sync.WaitGroup
	for i := range p.cfg.Receivers {
		receivers.Go(func() { p.receiveLoop(ctx, workCtx, i, items) })
	}
	for range p.cfg.Writers {
		writers.Go(func() { p.writeLoop(workCtx, items, jobs) })
	}
	for range p.cfg.Deleters {
		deleters.Go(func() {
			for job := range jobs {
				job(workCtx)
			}
		})
	}
	keeperCtx, stopKeeper := context.WithCancel(workCtx)
	background.Go(func() { p.keepLeases(keeperCtx) })
	background.Go(func() { p.pollQueueStats(ctx) })

	receivers.Wait()
	close(items)
	writers.Wait()
	close(jobs)
	deleters.Wait()
	stopKeeper()
	background.Wait()

	// Whatever is still held was abandoned (shutdown timeout): hand it back now rather than
	// after its visibility timeout.
	if held := p.leases.all(); len(held) > 0 {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		for start := 0; start < len(held); start += 10 {
			p.changeVisibility(rctx, held[start:min(start+10, len(held))], 0)
		}
		cancel()
		p.log.Warn("abandoned messages released for redelivery", "messages", len(held))
	}
}

func (p *Processor) receiveLoop(ctx, workCtx context.Context, receiver int, items chan<- *inbound) {
	log := p.log.With("receiver", receiver)
	in := &sqs.ReceiveMessageInput{
		QueueUrl:              aws.String(p.cfg.QueueURL),
		MaxNumberOfMessages:   p.cfg.ReceiveMaxMessages,
		WaitTimeSeconds:       int32(p.cfg.WaitTime / time.Second),
		VisibilityTimeout:     int32(p.cfg.VisibilityTimeout / time.Second),
		MessageAttributeNames: []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount, types.MessageSystemAttributeNameSentTimestamp},
	}
	failures := 0
	for ctx.Err() == nil {
		// While PostgreSQL is failing, receiving would only burn receive counts: after
		// maxReceiveCount of them the queue dead-letters perfectly good votes.
		if !p.gate.wait(ctx) {
			return
		}
		rctx, cancel := context.WithTimeout(workCtx, p.cfg.WaitTime+30*time.Second)
		start := time.Now()
		out, err := p.queue.ReceiveMessage(rctx, in)
		cancel()
		if err != nil {
			if workCtx.Err() != nil {
				return
			}
			p.metrics.ReceiveErrors.Inc()
			failures++
			log.Error("receive failed", "err", err)
			sleepCtx(ctx, backoffDelay(failures, p.cfg.BackoffMin, p.cfg.BackoffMax, rand.Float64()))
			continue
		}
		failures = 0
		now := time.Now()
		if len(out.Messages) == 0 {
			p.ages.set(receiver, time.Time{}, now)
			if in.WaitTimeSeconds == 0 { // short polling: do not spin on an empty queue
				sleepCtx(ctx, p.cfg.BackoffMin)
			}
			continue
		}
		// Only receives that brought messages measure SQS; an empty long poll measures silence.
		p.metrics.SQSSeconds.WithLabelValues(opReceive).Observe(now.Sub(start).Seconds())
		batch := make([]*inbound, len(out.Messages))
		var oldest time.Time
		for i, m := range out.Messages {
			batch[i] = newInbound(m, now)
			if s := sentAt(m); !s.IsZero() {
				p.metrics.QueueWait.Observe(max(0, now.Sub(s)).Seconds())
				if oldest.IsZero() || s.Before(oldest) {
					oldest = s
				}
			}
		}
		p.ages.set(receiver, oldest, now)
		p.metrics.Received.Add(float64(len(batch)))
		p.leases.add(batch, now, p.visibility)
		for _, it := range batch {
			select {
			case items <- it:
			case <-workCtx.Done():
				return // shutdown timeout: the leases are released by Run
			}
		}
	}
}

// writeLoop cuts the message stream into batches and persists each, retrying a batch that
// failed for a transient reason until it commits or shutdown gives up on it.
func (p *Processor) writeLoop(workCtx context.Context, items <-chan *inbound, jobs chan<- sqsJob) {
	for {
		batch, ok := p.nextBatch(items)
		if !ok {
			return
		}
		if workCtx.Err() != nil {
			continue // abandoned: drain the channel so receivers can exit; Run releases leases
		}
		p.metrics.BatchSize.Observe(float64(len(batch)))
		_, span := p.startBatchSpan(workCtx, batch)
		out, ok := p.processWithRetry(workCtx, batch)
		if !ok {
			recordOutcome(span, out, workCtx.Err())
			span.End()
			continue
		}
		recordOutcome(span, out, nil)
		chunks := (len(out.toDelete) + 9) / 10
		poison := min(len(out.poison), 1)
		done := newBatchDone(span, chunks+poison)
		for start := 0; start < len(out.toDelete); start += 10 {
			chunk := out.toDelete[start:min(start+10, len(out.toDelete))]
			jobs <- func(ctx context.Context) { p.deleteChunk(ctx, chunk); done.jobDone() }
		}
		if len(out.poison) > 0 {
			jobs <- func(ctx context.Context) { p.releasePoison(ctx, out.poison); done.jobDone() }
		}
	}
}

// sqsJob is post-commit work for the deleters.
type sqsJob func(ctx context.Context)

// nextBatch blocks for the first message, then collects until BatchMaxMessages or BatchMaxWait.
func (p *Processor) nextBatch(items <-chan *inbound) ([]*inbound, bool) {
	first, ok := <-items
	if !ok {
		return nil, false
	}
	start := time.Now()
	batch := make([]*inbound, 1, p.cfg.BatchMaxMessages)
	batch[0] = first
	timer := time.NewTimer(p.cfg.BatchMaxWait)
	defer timer.Stop()
	for len(batch) < p.cfg.BatchMaxMessages {
		select {
		case it, ok := <-items:
			if !ok {
				p.metrics.BatchFillSeconds.Observe(time.Since(start).Seconds())
				return batch, true
			}
			batch = append(batch, it)
		case <-timer.C:
			p.metrics.BatchFillSeconds.Observe(time.Since(start).Seconds())
			return batch, true
		}
	}
	p.metrics.BatchFillSeconds.Observe(time.Since(start).Seconds())
	return batch, true
}

// processWithRetry keeps the batch in hand (its leases extended) while PostgreSQL is
// unreachable, closing the gate so no receiver takes more work meanwhile; the first commit
// reopens it. Holding beats abandoning: the batch commits the moment the database is back
// instead of a visibility timeout later, and its receive counts do not grow.
func (p *Processor) processWithRetry(workCtx context.Context, batch []*inbound) (outcome, bool) {
	for attempt := 1; ; attempt++ {
		out, err := p.process(workCtx, batch)
		if err == nil {
			p.gate.open()
			return out, true
		}
		if workCtx.Err() != nil {
			p.log.Warn("shutdown timeout: batch abandoned, its messages reappear", "messages", len(batch))
			return outcome{}, false
		}
		p.gate.close()
		delay := backoffDelay(attempt, p.cfg.BackoffMin, p.cfg.BackoffMax, rand.Float64())
		p.log.Error("batch not persisted; holding it and retrying", "err", err, "messages", len(batch),
			"attempt", attempt, "retryIn", delay.String(), "requestIds", requestIDs(batch))
		sleepCtx(workCtx, delay)
	}
}

// keepLeases extends the visibility of every message held for more than half the visibility
// timeout (slow batch, database outage, backlog in the channel), so that SQS does not hand it to
// another consumer while this one still works on it.
func (p *Processor) keepLeases(ctx context.Context) {
	tick := min(max(p.visibility/4, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.ages.refresh(time.Now())
		due := p.leases.due(time.Now(), p.visibility/2)
		for start := 0; start < len(due); start += 10 {
			chunk := due[start:min(start+10, len(due))]
			failed := p.changeVisibility(ctx, chunk, p.visibility)
			p.metrics.VisibilityExtensions.Add(float64(len(chunk) - len(failed)))
			p.leases.extended(chunk, failed, time.Now().Add(p.visibility))
		}
	}
}

// gate is the circuit breaker between the database and the receivers.
type gate struct {
	mu     sync.Mutex
	ch     chan struct{} // closed while the database is healthy
	isOpen bool
	up     prometheus.Gauge
}

func newGate(up prometheus.Gauge) *gate {
	g := &gate{ch: make(chan struct{}), isOpen: true, up: up}
	close(g.ch)
	up.Set(1)
	return g
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.isOpen {
		g.isOpen = true
		close(g.ch)
		g.up.Set(1)
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isOpen {
		g.isOpen = false
		g.ch = make(chan struct{})
		g.up.Set(0)
	}
}

// wait blocks while the gate is closed; false means ctx ended first.
func (g *gate) wait(ctx context.Context) bool {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// leases are the messages this process holds (received, not yet deleted or handed back).
type leases struct {
	mu   sync.Mutex
	held map[*inbound]time.Time // visibility deadline
}

func newLeases() *leases { return &leases{held: map[*inbound]time.Time{}} }

func (l *leases) add(items []*inbound, now time.Time, visibility time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, it := range items {
		l.held[it] = now.Add(visibility)
	}
}

func (l *leases) remove(items []*inbound) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, it := range items {
		delete(l.held, it)
	}
}

// due lists the held messages whose visibility ends within margin.
func (l *leases) due(now time.Time, margin time.Duration) []*inbound {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*inbound
	for it, deadline := range l.held {
		if deadline.Sub(now) < margin {
			out = append(out, it)
		}
	}
	return out
}

// extended records new deadlines; a message whose extension failed is no longer ours to hold
// (deleted meanwhile, or its receipt handle expired), so it is dropped from the leases.
func (l *leases) extended(items, failed []*inbound, deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, it := range items {
		if _, ok := l.held[it]; ok {
			l.held[it] = deadline
		}
	}
	for _, it := range failed {
		delete(l.held, it)
	}
}

func (l *leases) all() []*inbound {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*inbound, 0, len(l.held))
	for it := range l.held {
		out = append(out, it)
	}
	return out
}

// receiverAges feeds the oldest-message gauge: each receiver reports when the oldest message of
// its latest receive was sent (zero after an empty poll) and the gauge shows now minus the
// earliest of those, refreshed on every receive and every lease tick, so while receiving is
// paused (database down) the age keeps growing instead of freezing. SQS's
// ApproximateAgeOfOldestMessage is a CloudWatch metric that ElasticMQ does not have;
// SentTimestamp of what we receive is available everywhere, and since SQS hands out roughly the
// oldest messages first it tracks the backlog's age closely.
type receiverAges struct {
	sentMs []atomic.Int64
	gauge  prometheus.Gauge
}

func newReceiverAges(n int, gauge prometheus.Gauge) *receiverAges {
	return &receiverAges{sentMs: make([]atomic.Int64, max(n, 1)), gauge: gauge}
}

// set records the oldest SentTimestamp of a receiver's latest receive (zero: nothing received).
func (a *receiverAges) set(receiver int, oldestSent time.Time, now time.Time) {
	var ms int64
	if !oldestSent.IsZero() {
		ms = oldestSent.UnixMilli()
	}
	a.sentMs[receiver%len(a.sentMs)].Store(ms)
	a.refresh(now)
}

func (a *receiverAges) refresh(now time.Time) {
	var oldest time.Duration
	for i := range a.sentMs {
		if ms := a.sentMs[i].Load(); ms > 0 {
			oldest = max(oldest, now.Sub(time.UnixMilli(ms)))
		}
	}
	a.gauge.Set(oldest.Seconds())
}
