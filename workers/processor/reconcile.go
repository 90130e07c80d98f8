package processor

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// AcceptedCounterKey is the edge's Redis counter of votes acknowledged (or in flight) for one
// election. The braces are a Redis Cluster hash tag: all of an election's keys share a slot.
func AcceptedCounterKey(electionID string) string {
	return "votes:accepted:{" + electionID + "}"
}

// Reconciler exports the vote-loss alarm: per active or recently closed election, the edge's
// count of acknowledged votes minus the votes PostgreSQL holds.
//
// Why the edge counter is a defensible source: the filter increments it in the same step that
// reserves the viewer's dedup key (SET NX succeeded) and decrements it when the enqueue fails
// and the key is released. So it counts exactly the distinct (election, viewer) pairs that were
// answered 200 or are about to be, and the votes table counts distinct (election, viewer)
// pairs too (UNIQUE (election_id, user_id)): both sides count the same thing, duplicates and
// rejected requests are on neither side, and nothing else writes votes. It is independent of
// the path it checks (SQS, the processor, PostgreSQL), which is what an end-to-end loss alarm
// needs; the SQS queue depth, by contrast, cannot show a message that vanished.
//
// Lag and reading it: the gap is acknowledged-but-not-yet-persisted votes plus lost ones.
// In steady state it equals the backlog: votes between the edge's SET NX and our commit (SQS
// send, time in the queue, one batch), i.e. end-to-end latency × vote rate, plus up to one
// ReconcileInterval of staleness. The DB is read before Redis, so a race can only overstate
// the gap, never hide loss. Loss shows as a gap that does not return to 0 once the queue has
// drained — alert on "gap > 0 for 10 min while voting_processor_queue_messages == 0", and
// after an election closes the gap must reach exactly 0.
//
// Known sources of error, all visible as a constant offset: a negative gap means the edge
// undercounted (an enqueue that timed out after SQS had accepted it is decremented but still
// persisted; a Redis failover that lost writes); a dedup key that expires before the election
// ends lets a viewer be counted twice at the edge but once here (positive offset). With one
// Redis per region, set ReconcileRegion so each region compares its own counter with the votes
// persisted from its region (vote_stats), not with the global total.
type Reconciler struct {
	cfg      Config
	rdb      redis.UniversalClient
	db       Querier
	log      *slog.Logger
	interval time.Duration

	gapDesc, acceptedDesc, persistedDesc *prometheus.Desc
	lastSuccess                          prometheus.Gauge
	failures                             prometheus.Counter

	mu   sync.Mutex
	rows []reconcileRow
}

// Querier is the part of *pgxpool.Pool the reconciler uses.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type reconcileRow struct {
	electionID          string
	accepted, persisted int64
}

// NewRedisClient connects to the edge's Redis: host:port, a redis:// or rediss:// URL, or a
// comma-separated list of cluster nodes.
func NewRedisClient(addr string) (redis.UniversalClient, error) {
	if strings.Contains(addr, "://") {
		opt, err := redis.ParseURL(addr)
		if err != nil {
			return nil, fmt.Errorf("PROCESSOR_REDIS_ADDR: %w", err)
		}
		return redis.NewClient(opt), nil
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(addr, ",")}), nil
}

// NewReconciler registers the reconciliation series in m's registry; they exist only when a
// Redis address is configured.
func NewReconciler(cfg Config, rdb redis.UniversalClient, db Querier, log *slog.Logger, m *Metrics) *Reconciler {
	cfg = cfg.withDefaults()
	labels := []string{"election_id"}
	r := &Reconciler{
		cfg: cfg, rdb: rdb, db: db, log: log, interval: cfg.ReconcileInterval,
		gapDesc: prometheus.NewDesc("voting_processor_reconciliation_gap_votes",
			"Votes acknowledged at the edge (Redis votes:accepted:{id}) minus votes persisted; stays > 0 after the queue drains = votes lost.",
			labels, nil),
		acceptedDesc: prometheus.NewDesc("voting_processor_reconciliation_accepted_votes",
			"The edge's counter of acknowledged or in-flight votes, as last read.", labels, nil),
		persistedDesc: prometheus.NewDesc("voting_processor_reconciliation_persisted_votes",
			"Votes persisted in PostgreSQL (this region's when PROCESSOR_RECONCILE_REGION is set), as last read.", labels, nil),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "voting_processor_reconciliation_last_success_timestamp_seconds",
			Help: "Unix time of the last complete reconciliation; alert when it stops moving.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "voting_processor_reconciliation_failures_total",
			Help: "Reconciliation rounds that failed (Redis or PostgreSQL unreachable).",
		}),
	}
	m.Registry.MustRegister(r, r.lastSuccess, r.failures)
	return r
}

// Describe implements prometheus.Collector.
func (r *Reconciler) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.gapDesc
	ch <- r.acceptedDesc
	ch <- r.persistedDesc
}

// Collect implements prometheus.Collector: the last complete round, one series per election.
func (r *Reconciler) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range r.rows {
		ch <- prometheus.MustNewConstMetric(r.gapDesc, prometheus.GaugeValue, float64(row.accepted-row.persisted), row.electionID)
		ch <- prometheus.MustNewConstMetric(r.acceptedDesc, prometheus.GaugeValue, float64(row.accepted), row.electionID)
		ch <- prometheus.MustNewConstMetric(r.persistedDesc, prometheus.GaugeValue, float64(row.persisted), row.electionID)
	}
}

// Run reconciles every interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	for {
		rctx, cancel := context.WithTimeout(ctx, max(r.interval, 5*time.Second))
		if err := r.Reconcile(rctx); err != nil && ctx.Err() == nil {
			r.failures.Inc()
			r.log.Warn("reconciliation failed; the gauge keeps its last values", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.interval):
		}
	}
}

// reconcileSQL lists the elections to watch with their persisted votes: active ones, and
// closed ones for ReconcileClosedWindow after their end (the queue may still be draining).
const reconcileSQL = `
SELECT e.id::text,
       CASE WHEN $2 = '' THEN
           (SELECT COALESCE(sum(vc.votes), 0) FROM vote_counts vc WHERE vc.election_id = e.id)
       ELSE
           (SELECT COALESCE(sum(vs.votes), 0) FROM vote_stats vs WHERE vs.election_id = e.id AND vs.region = $2)
       END::bigint
FROM elections e
WHERE e.status = 'ACTIVE' OR (e.status = 'CLOSED' AND e.end_date > $1)
ORDER BY e.id`

// Reconcile runs one round: PostgreSQL first, then Redis (see Reconciler for why that order).
func (r *Reconciler) Reconcile(ctx context.Context) error {
	rows, err := r.db.Query(ctx, reconcileSQL, time.Now().Add(-r.cfg.ReconcileClosedWindow), r.cfg.ReconcileRegion)
	if err != nil {
		return fmt.Errorf("read persisted counts: %w", err)
	}
	var out []reconcileRow
	for rows.Next() {
		var row reconcileRow
		if err := rows.Scan(&row.electionID, &row.persisted); err != nil {
			rows.Close()
			return fmt.Errorf("scan persisted counts: %w", err)
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read persisted counts: %w", err)
	}
	if len(out) > 0 {
		// One GET per key in a pipeline, not MGET: with a Redis Cluster each election's key
		// lives in its own slot and MGET across slots is refused.
		pipe := r.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(out))
		for i, row := range out {
			cmds[i] = pipe.Get(ctx, AcceptedCounterKey(row.electionID))
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return fmt.Errorf("read edge counters: %w", err)
		}
		for i := range out {
			n, err := cmds[i].Int64()
			switch {
			case err == redis.Nil:
				n = 0 // no vote acknowledged yet (or the counter was lost: shows as a negative gap)
			case err != nil:
				return fmt.Errorf("edge counter %s: %w", AcceptedCounterKey(out[i].electionID), err)
			}
			out[i].accepted = n
		}
	}
	r.mu.Lock()
	r.rows = out
	r.mu.Unlock()
	r.lastSuccess.SetToCurrentTime()
	return nil
}
