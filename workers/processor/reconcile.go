package processor

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/tvvote/voting/filters/votefilter/dedup"
)

// Reconciler exports the vote-loss figure: per active or recently closed election, the votes
// the edge store counts as final minus the votes PostgreSQL holds.
//
// Why the counter is a defensible source: it lives beside the dedup keys (dedup.AcceptedKeys, one share per bucket of viewers)
// and moves in the same script that turns a viewer's key final — the edge's Confirm after SQS
// acknowledged the vote, or the processor's Record after PostgreSQL stored it, whichever comes
// first. A key turns final once, so the counter counts distinct (election, viewer) pairs whose
// vote is queued or stored, exactly as the votes table counts distinct pairs (UNIQUE
// (election_id, user_id)). Failed attempts, duplicates and reservations that never turned final
// are on neither side. Both sides are durable (the store keeps an append-only file, PostgreSQL
// its WAL), so the figure survives the restart of any one component. It is independent of the
// path it checks (SQS, the processor, PostgreSQL), which an end-to-end loss alarm needs; the
// queue depth, by contrast, cannot show a message that vanished.
//
// Reading it: the gap is queued-but-not-yet-persisted votes plus lost ones. In steady state it
// equals the backlog (end-to-end latency × vote rate) plus up to one ReconcileInterval of
// staleness. PostgreSQL is read before the store, so a race can only overstate the gap, never
// hide a loss. Loss shows as a gap that does not return to 0 once the queue has drained; after
// an election closes the gap must reach exactly 0.
//
// Known offsets: a negative gap means the store undercounted (a failover that lost writes); a
// dedup key that expires before the election ends lets a viewer be counted twice by the store
// but once here. A 200 for a vote that PostgreSQL then refused as the viewer's second vote is
// not a gap (one final key, one row) — voting_processor_vote_conflicts_total reports those.
// With one store per region, set ReconcileRegion so each region compares its own counter with
// the votes persisted with that home region (vote_stats.home_region: the store that took them,
// whichever region's edge served the viewer), not with the global total.
type Reconciler struct {
	cfg      Config
	rdb      rueidis.Client
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

// NewReconciler registers the reconciliation series in m's registry; they exist only when a
// Redis address is configured.
func NewReconciler(cfg Config, rdb rueidis.Client, db Querier, log *slog.Logger, m *Metrics) *Reconciler {
	cfg = withDefaults(cfg)
	labels := []string{"election_id"}
	r := &Reconciler{
		cfg: cfg, rdb: rdb, db: db, log: log, interval: cfg.ReconcileInterval,
		gapDesc: prometheus.NewDesc("voting_processor_reconciliation_gap_votes",
			"Votes final in the edge store (votes:accepted:{id}) minus votes persisted; stays > 0 after the queue drains = votes lost.",
			labels, nil),
		acceptedDesc: prometheus.NewDesc("voting_processor_reconciliation_accepted_votes",
			"The edge store's counter of votes queued or stored, as last read.", labels, nil),
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
           (SELECT COALESCE(sum(vs.votes), 0) FROM vote_stats vs WHERE vs.election_id = e.id AND vs.home_region = $2)
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
		// One GET per bucket of each election, pipelined, not MGET: with a Redis Cluster the
		// buckets live in different slots and MGET across slots is refused.
		cmds := make(rueidis.Commands, 0, len(out)*dedup.Buckets)
		for _, row := range out {
			for _, key := range dedup.AcceptedKeys(row.electionID) {
				cmds = append(cmds, r.rdb.B().Get().Key(key).Build())
			}
		}
		for i, res := range r.rdb.DoMulti(ctx, cmds...) {
			n, err := res.AsInt64()
			switch {
			case rueidis.IsRedisNil(err):
				n = 0 // no vote final in this bucket yet (or lost: shows as a negative gap)
			case err != nil:
				return fmt.Errorf("edge counter of election %s: %w", out[i/dedup.Buckets].electionID, err)
			}
			out[i/dedup.Buckets].accepted += n
		}
	}
	r.mu.Lock()
	r.rows = out
	r.mu.Unlock()
	r.lastSuccess.SetToCurrentTime()
	return nil
}
