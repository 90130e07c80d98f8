//go:build insertcopy

// Command processor-bench measures the vote processor end to end on real ElasticMQ and
// PostgreSQL (started here, on loopback, through devstack) and compares it with PostgreSQL's own
// server-side bulk-insert rate into the same schema, the physical limit for this machine.
//
//	go run -tags insertcopy ./loadtest/processor -messages 200000
//
// The insertcopy tag builds the processor with its insert path selectable (unnest or COPY);
// the processor's own binary has only unnest.
//
// Steps, all in one run so the numbers share one machine state:
//  1. limit: INSERT … SELECT generate_series … ON CONFLICT DO NOTHING into a fresh election of
//     the empty votes table (conservative: the processor later inserts into a fuller table);
//  2. paths: the processor's batch transaction alone (no SQS), once per insert path, to
//     choose between array-unnest and COPY and to show the database-side ceiling;
//  3. end to end: pre-fill the votes queue with SendMessageBatch from many goroutines, then run
//     the processor until every vote is counted, and read its histograms to say where the time
//     went (receive, transaction, delete).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/schema"
	"github.com/tvvote/voting/workers/processor"
	"github.com/tvvote/voting/workers/processor/processorconfig"
)

type options struct {
	messages, candidates, fillWorkers      int
	receivers, writers, deleters, batchMax int
	batchWait                              time.Duration
	insertPath                             string
	skipPaths, skipE2E, skipElasticMQ      bool
	pathBatches                            string
	sqsEndpoint                            string
	memReceivers                           int
	memLatency                             time.Duration
	cpuProfile                             string
}

func main() {
	var o options
	flag.IntVar(&o.messages, "messages", 200_000, "votes to pre-fill and persist")
	flag.IntVar(&o.candidates, "candidates", 5, "candidates in the benchmark election")
	flag.IntVar(&o.fillWorkers, "fill-workers", 32, "goroutines sending SendMessageBatch while pre-filling")
	def := processorconfig.Defaults()
	flag.IntVar(&o.receivers, "receivers", def.Receivers, "PROCESSOR_RECEIVERS")
	flag.IntVar(&o.writers, "writers", def.Writers, "PROCESSOR_WRITERS")
	flag.IntVar(&o.deleters, "deleters", def.Deleters, "PROCESSOR_DELETERS")
	flag.IntVar(&o.batchMax, "batch", def.BatchMaxMessages, "PROCESSOR_BATCH_MAX_MESSAGES")
	flag.DurationVar(&o.batchWait, "batch-wait", def.BatchMaxWait, "PROCESSOR_BATCH_MAX_WAIT")
	flag.StringVar(&o.insertPath, "insert-path", processor.InsertUnnest, "insert path of the end-to-end run: unnest or copy")
	flag.BoolVar(&o.skipPaths, "skip-paths", false, "skip the database-only insert-path comparison")
	flag.BoolVar(&o.skipE2E, "skip-e2e", false, "skip the end-to-end runs")
	flag.BoolVar(&o.skipElasticMQ, "skip-elasticmq", false, "skip the runs through ElasticMQ (only the in-process queue double)")
	flag.StringVar(&o.pathBatches, "path-batches", "500,1000,2000", "batch sizes for the insert-path comparison")
	flag.StringVar(&o.sqsEndpoint, "sqs-endpoint", "", "use this running ElasticMQ (queue votes) instead of starting one through devstack")
	flag.IntVar(&o.memReceivers, "mem-receivers", 4, "receivers for the run on the in-process queue double (0 skips it)")
	flag.DurationVar(&o.memLatency, "mem-latency", 0, "latency added to every call of the in-process queue double")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (processor side) to the file")
	flag.Parse()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: cpuprofile:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(o); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	ctx := context.Background()
	fmt.Printf("# processor benchmark  %s  GOMAXPROCS=%d  NumCPU=%d  %s\n\n",
		time.Now().UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), runtime.NumCPU(), runtime.Version())

	pg, mq, err := startServices(ctx, o.sqsEndpoint == "")
	if err != nil {
		return err
	}
	defer pg.Stop()
	endpoint := o.sqsEndpoint
	if mq != nil {
		defer mq.Stop()
		endpoint = mq.Endpoint
	}
	if err := schema.Migrate(ctx, pg.DSN); err != nil {
		return err
	}
	poolCfg, err := pgxpool.ParseConfig(pg.DSN)
	if err != nil {
		return err
	}
	poolCfg.MaxConns = int32(o.writers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	// 1. The physical limit.
	limit, err := measureLimit(ctx, pool, o)
	if err != nil {
		return fmt.Errorf("limit: %w", err)
	}
	fmt.Printf("PostgreSQL server-side INSERT … SELECT generate_series … ON CONFLICT DO NOTHING: %d rows in %s = %.0f rows/s\n\n",
		o.messages, limit.elapsed.Round(time.Millisecond), limit.rate)

	// 2. The transaction alone, per insert path.
	if !o.skipPaths {
		if err := comparePaths(ctx, pool, o, limit.rate); err != nil {
			return fmt.Errorf("paths: %w", err)
		}
	}

	// 3. End to end.
	if o.skipE2E {
		return nil
	}
	return endToEnd(ctx, pool, endpoint, o, limit.rate)
}

func startServices(ctx context.Context, withMQ bool) (*devstack.Postgres, *devstack.ElasticMQ, error) {
	pgPort, err := devstack.FreePort()
	if err != nil {
		return nil, nil, err
	}
	mqPort, err := devstack.FreePort()
	if err != nil {
		return nil, nil, err
	}
	var (
		wg           sync.WaitGroup
		pg           *devstack.Postgres
		mq           *devstack.ElasticMQ
		pgErr, mqErr error
	)
	wg.Go(func() { pg, pgErr = devstack.StartPostgres(ctx, pgPort) })
	if withMQ {
		wg.Go(func() { mq, mqErr = devstack.StartElasticMQ(ctx, mqPort) })
	}
	wg.Wait()
	if err := errors.Join(pgErr, mqErr); err != nil {
		if pg != nil {
			pg.Stop()
		}
		if mq != nil {
			mq.Stop()
		}
		return nil, nil, err
	}
	return pg, mq, nil
}

type election struct {
	id         string
	candidates []string
}

func seedElection(ctx context.Context, pool *pgxpool.Pool, title string, n int) (election, error) {
	e := election{id: uuid.NewString()}
	_, err := pool.Exec(ctx, `INSERT INTO elections (id, title, status, start_date, end_date)
		VALUES ($1, $2, 'ACTIVE', now() - interval '1 hour', now() + interval '1 day')`, e.id, title)
	if err != nil {
		return e, err
	}
	for i := range n {
		c := uuid.NewString()
		if _, err := pool.Exec(ctx, `INSERT INTO candidates (id, election_id, name) VALUES ($1, $2, $3)`,
			c, e.id, fmt.Sprintf("Candidate %d", i+1)); err != nil {
			return e, err
		}
		e.candidates = append(e.candidates, c)
	}
	return e, nil
}

type limitResult struct {
	elapsed time.Duration
	rate    float64
}

// limitSQL is the same row shape the processor writes. The ids are time-ordered like the edge's
// UUIDv7 (a prefix that grows with every measurement, increasing tail), so the primary-key index
// is appended to exactly as in production; candidates rotate as votes would.
const limitSQL = `
INSERT INTO votes (id, election_id, candidate_id, user_id, region, request_id, accepted_at)
SELECT ($4 || lpad(to_hex(g), 12, '0'))::uuid, $1,
       ($2::uuid[])[1 + g % array_length($2::uuid[], 1)],
       'limit-user-' || g, 'eu-west-1', 'limit-rid-' || g, now()
FROM generate_series(1, $3::int) AS g
ON CONFLICT DO NOTHING`

// limitRuns numbers the limit measurements, to give each its own id range.
var limitRuns int

func measureLimit(ctx context.Context, pool *pgxpool.Pool, o options) (limitResult, error) {
	e, err := seedElection(ctx, pool, "Physical limit", o.candidates)
	if err != nil {
		return limitResult{}, err
	}
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return limitResult{}, err
	}
	limitRuns++
	prefix := fmt.Sprintf("0190%04x-0000-7000-8000-", limitRuns)
	start := time.Now()
	tag, err := pool.Exec(ctx, limitSQL, e.id, e.candidates, o.messages, prefix)
	if err != nil {
		return limitResult{}, err
	}
	elapsed := time.Since(start)
	if tag.RowsAffected() != int64(o.messages) {
		return limitResult{}, fmt.Errorf("inserted %d rows, want %d", tag.RowsAffected(), o.messages)
	}
	return limitResult{elapsed: elapsed, rate: float64(o.messages) / elapsed.Seconds()}, nil
}

// nopQueue stands in for SQS when only the database side is measured.
type nopQueue struct{ processor.Queue }

func (nopQueue) DeleteMessageBatch(context.Context, *sqs.DeleteMessageBatchInput, ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error) {
	return &sqs.DeleteMessageBatchOutput{}, nil
}

func (nopQueue) ChangeMessageVisibilityBatch(context.Context, *sqs.ChangeMessageVisibilityBatchInput, ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityBatchOutput, error) {
	return &sqs.ChangeMessageVisibilityBatchOutput{}, nil
}

// comparePaths runs the processor's HandleBatch (parse, transaction, notify; deletes are no-ops)
// from o.writers goroutines over in-memory messages, for each insert path and batch size.
func comparePaths(ctx context.Context, pool *pgxpool.Pool, o options, limit float64) error {
	fmt.Println("## Batch transaction alone (HandleBatch without SQS), votes/s")
	fmt.Println()
	fmt.Println("| batch | unnest | copy | unnest / limit |")
	fmt.Println("|---|---|---|---|")
	n := min(o.messages, 100_000)
	for _, field := range splitInts(o.pathBatches) {
		rates := map[string]float64{}
		for _, path := range []string{processor.InsertUnnest, processor.InsertCopy} {
			e, err := seedElection(ctx, pool, "Path "+path, o.candidates)
			if err != nil {
				return err
			}
			msgs := make([]types.Message, n)
			for i := range msgs {
				msgs[i] = message(e, i)
			}
			cfg := processor.Config{QueueURL: "http://unused/1/votes", DBTimeout: time.Minute, Receivers: 1}
			p := processor.New(cfg, nopQueue{}, pool, slog.New(slog.NewJSONHandler(io.Discard, nil)), processor.NewMetrics()).
				WithInsertPath(path)
			var next atomic.Int64
			var wg sync.WaitGroup
			var firstErr atomic.Value
			start := time.Now()
			for range o.writers {
				wg.Go(func() {
					for {
						lo := int(next.Add(int64(field))) - field
						if lo >= n {
							return
						}
						if _, err := p.HandleBatch(ctx, msgs[lo:min(lo+field, n)]); err != nil {
							firstErr.CompareAndSwap(nil, err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err, _ := firstErr.Load().(error); err != nil {
				return err
			}
			rates[path] = float64(n) / time.Since(start).Seconds()
			if err := checkCount(ctx, pool, e.id, n); err != nil {
				return err
			}
		}
		fmt.Printf("| %d | %.0f | %.0f | %.0f %% |\n", field, rates[processor.InsertUnnest], rates[processor.InsertCopy],
			100*rates[processor.InsertUnnest]/limit)
	}
	fmt.Println()
	return nil
}

func splitInts(s string) []int {
	var out []int
	for _, f := range splitComma(s) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}

// message is vote i of election e as the edge would enqueue it: UUIDv7 id, distinct viewer.
func message(e election, i int) types.Message {
	id, _ := uuid.NewV7()
	body, _ := json.Marshal(contract.QueuedVote{
		VoteID: id.String(), ElectionID: e.id, CandidateID: e.candidates[i%len(e.candidates)],
		UserID: "auth0|bench-" + strconv.Itoa(i), Region: "eu-west-1", RequestID: uuid.NewString(),
		AcceptedAt: time.Now().UTC(),
	})
	rid := uuid.NewString()
	return types.Message{
		MessageId: aws.String(strconv.Itoa(i)), ReceiptHandle: aws.String(strconv.Itoa(i)), Body: aws.String(string(body)),
		MessageAttributes: map[string]types.MessageAttributeValue{
			contract.AttrRequestID: {DataType: aws.String("String"), StringValue: aws.String(rid)},
		},
	}
}

func checkCount(ctx context.Context, pool *pgxpool.Pool, electionID string, want int) error {
	var got int64
	if err := pool.QueryRow(ctx, `SELECT COALESCE(sum(votes), 0) FROM vote_counts WHERE election_id = $1`, electionID).Scan(&got); err != nil {
		return err
	}
	if got != int64(want) {
		return fmt.Errorf("election %s counted %d votes, want %d", electionID, got, want)
	}
	return nil
}

func endToEnd(ctx context.Context, pool *pgxpool.Pool, endpoint string, o options, limit float64) error {
	e, err := seedElection(ctx, pool, "End to end", o.candidates)
	if err != nil {
		return err
	}
	base := processor.Config{SQSEndpoint: endpoint, SQSRegion: "us-east-1", Receivers: o.receivers, Deleters: o.deleters}
	sqsc, err := processor.NewSQSClient(ctx, base)
	if err != nil {
		return err
	}
	queueURL := endpoint + "/" + devstack.AccountID + "/votes"

	if !o.skipElasticMQ {
		// ElasticMQ's own ceiling on this machine: a bare receive + delete loop, no database.
		if err := bareQueueRate(ctx, sqsc, endpoint, e, o); err != nil {
			return err
		}

		// Pre-fill.
		start := time.Now()
		if err := fill(ctx, sqsc, queueURL, e, o); err != nil {
			return err
		}
		fillTime := time.Since(start)
		fmt.Printf("## End to end through ElasticMQ\n\nPre-filled %d messages with SendMessageBatch from %d goroutines in %s (%.0f msg/s)\n\n",
			o.messages, o.fillWorkers, fillTime.Round(time.Millisecond), float64(o.messages)/fillTime.Seconds())
		if err := drain(ctx, pool, sqsc, queueURL, e, o, o.receivers, limit); err != nil {
			return err
		}
	}

	// The same pipeline with the queue in process: what the processor does when SQS is not
	// the bottleneck.
	if o.memReceivers > 0 {
		e2, err := seedElection(ctx, pool, "In-memory queue", o.candidates)
		if err != nil {
			return err
		}
		msgs := make([]types.Message, o.messages)
		for i := range msgs {
			msgs[i] = message(e2, i)
		}
		fmt.Printf("## Same pipeline, in-process queue double (%s per call), no ElasticMQ\n\n", o.memLatency)
		return drain(ctx, pool, newMemQueue(msgs, o.memLatency), "http://memory/"+devstack.AccountID+"/votes", e2, o, o.memReceivers, limit)
	}
	return nil
}

// drain runs the processor on a pre-filled queue until every vote of e is persisted and
// reports the rate and where the time went.
func drain(ctx context.Context, pool *pgxpool.Pool, queue processor.Queue, queueURL string, e election, o options, receivers int, _ float64) error {
	// The limit again, right before the run, at the table's current size: the ratio compares
	// like with like (the table grows with every step, and inserts slow down as it does).
	lim, err := measureLimit(ctx, pool, o)
	if err != nil {
		return err
	}
	limit := lim.rate
	fmt.Printf("Limit measured just before this run: %.0f rows/s\n\n", limit)
	if _, err := pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	cfg := processor.Config{
		QueueURL: queueURL, SQSRegion: "us-east-1",
		Receivers: receivers, ReceiveMaxMessages: 10, WaitTime: 20 * time.Second,
		BatchMaxMessages: o.batchMax, BatchMaxWait: o.batchWait, Writers: o.writers, Deleters: o.deleters,
		PoisonRetryDelay: 5 * time.Second, BackoffMin: 200 * time.Millisecond, BackoffMax: 5 * time.Second,
		DBTimeout: 30 * time.Second, ShutdownTimeout: 30 * time.Second, QueueStatsInterval: time.Minute,
	}
	m := processor.NewMetrics()
	p := processor.New(cfg, queue, pool, slog.New(slog.NewJSONHandler(io.Discard, nil)), m).WithInsertPath(o.insertPath)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	cpuStart := cpuTime()
	go func() { p.Run(runCtx); close(done) }()
	deadline := time.Now().Add(10 * time.Minute)
	for counter(m.Registry, "voting_processor_votes_persisted_total") < float64(o.messages) {
		if time.Now().After(deadline) {
			cancel()
			return fmt.Errorf("only %.0f of %d votes persisted after 10 minutes", counter(m.Registry, "voting_processor_votes_persisted_total"), o.messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpuStart
	cancel()
	<-done
	if err := checkCount(ctx, pool, e.id, o.messages); err != nil {
		return err
	}
	rate := float64(o.messages) / elapsed.Seconds()
	fmt.Printf("Processor (%s path, %d receivers, %d writers, %d deleters, batch ≤ %d / %s): %d votes persisted in %s = **%.0f votes/s**, **%.0f %%** of the limit (%.0f rows/s)\n\n",
		o.insertPath, receivers, o.writers, o.deleters, o.batchMax, o.batchWait, o.messages, elapsed.Round(time.Millisecond), rate,
		100*rate/limit, limit)
	fmt.Printf("Processor-side CPU (this process: processor, SDK, pgx): %.1f s over %.1f s wall = %.2f cores\n\n",
		cpu.Seconds(), elapsed.Seconds(), cpu.Seconds()/elapsed.Seconds())

	recv := histogram(m.Registry, "voting_processor_sqs_request_seconds", "receive")
	del := histogram(m.Registry, "voting_processor_sqs_request_seconds", "delete")
	tx := histogram(m.Registry, "voting_processor_batch_commit_seconds", "")
	size := histogram(m.Registry, "voting_processor_batch_size_messages", "")
	fillH := histogram(m.Registry, "voting_processor_batch_fill_seconds", "")
	fmt.Println("| stage | calls | mean | summed time | callers | busy share per caller |")
	fmt.Println("|---|---|---|---|---|---|")
	row := func(name string, h hist, conc int) {
		fmt.Printf("| %s | %d | %.2f ms | %.1f s | %d | %.0f %% |\n", name, h.count, 1000*h.mean(), h.sum, conc,
			100*h.sum/float64(conc)/elapsed.Seconds())
	}
	row("SQS ReceiveMessage (non-empty)", recv, receivers)
	row("writer collecting a batch", fillH, o.writers)
	row("batch transaction BEGIN..COMMIT", tx, o.writers)
	row("SQS DeleteMessageBatch", del, o.deleters)
	fmt.Printf("\nMean batch %.0f messages over %d batches.\n\n", size.mean(), size.count)
	return nil
}

// bareQueueRate fills a scratch queue with a quarter of the messages and empties it with a
// plain ReceiveMessage + DeleteMessageBatch loop from o.receivers goroutines: the most any
// consumer can get out of this ElasticMQ on this machine.
func bareQueueRate(ctx context.Context, sqsc *sqs.Client, endpoint string, e election, o options) error {
	out, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(fmt.Sprintf("bare-%d", time.Now().UnixNano()))})
	if err != nil {
		return err
	}
	url := aws.ToString(out.QueueUrl)
	n := max(o.messages/4, 1000)
	fo := o
	fo.messages = n
	if err := fill(ctx, sqsc, url, e, fo); err != nil {
		return err
	}
	var got atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.receivers)
	start := time.Now()
	for range o.receivers {
		wg.Go(func() {
			for got.Load() < int64(n) {
				r, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(url), MaxNumberOfMessages: 10,
					WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"}})
				if err != nil {
					errs <- err
					return
				}
				if len(r.Messages) == 0 {
					continue
				}
				entries := make([]types.DeleteMessageBatchRequestEntry, len(r.Messages))
				for i, m := range r.Messages {
					entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
				}
				if _, err := sqsc.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: entries}); err != nil {
					errs <- err
					return
				}
				got.Add(int64(len(r.Messages)))
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Printf("## ElasticMQ alone\n\nBare ReceiveMessage(10) + DeleteMessageBatch loop, %d goroutines, no database: %d messages in %s = **%.0f msg/s** (the ceiling of any consumer of this ElasticMQ on this machine)\n\n",
		o.receivers, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	return nil
}

// fill sends o.messages votes in SendMessageBatch calls of 10 from o.fillWorkers goroutines.
func fill(ctx context.Context, sqsc *sqs.Client, queueURL string, e election, o options) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.fillWorkers)
	for range o.fillWorkers {
		wg.Go(func() {
			for {
				lo := int(next.Add(10)) - 10
				if lo >= o.messages {
					return
				}
				hi := min(lo+10, o.messages)
				entries := make([]types.SendMessageBatchRequestEntry, 0, hi-lo)
				for i := lo; i < hi; i++ {
					m := message(e, i)
					entries = append(entries, types.SendMessageBatchRequestEntry{
						Id: aws.String(strconv.Itoa(i - lo)), MessageBody: m.Body, MessageAttributes: m.MessageAttributes})
				}
				out, err := sqsc.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(queueURL), Entries: entries})
				if err == nil && len(out.Failed) > 0 {
					err = fmt.Errorf("%d entries failed: %s", len(out.Failed), aws.ToString(out.Failed[0].Message))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type hist struct {
	count uint64
	sum   float64
}

func (h hist) mean() float64 {
	if h.count == 0 {
		return 0
	}
	return h.sum / float64(h.count)
}

// histogram reads one histogram series from the processor's registry (op: the "op" label value
// of voting_processor_sqs_request_seconds, or "" for unlabelled histograms).
func histogram(reg prometheus.Gatherer, name, op string) hist {
	mfs, err := reg.Gather()
	if err != nil {
		return hist{}
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if op != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != op) {
				continue
			}
			return hist{count: m.GetHistogram().GetSampleCount(), sum: m.GetHistogram().GetSampleSum()}
		}
	}
	return hist{}
}

// counter reads an unlabelled counter from the processor's registry.
func counter(reg prometheus.Gatherer, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// cpuTime is the user + system CPU this process has used (processor, SDK, pgx; not ElasticMQ or
// PostgreSQL, which run as their own processes on the same cores).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
