package processor

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/filters/votefilter/dedup"
)

// TestVoteStatsPerHourRegionAndCandidate: vote_stats counts inserted votes per UTC hour of
// acceptedAt, region and candidate, and adds up each vote's time since the election opened, in
// the insert transaction; duplicates add nothing. Both insert paths.
func TestVoteStatsPerHourRegionAndCandidate(t *testing.T) {
	for _, path := range []string{pathUnnest, pathCopy} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t)
			// Voting opened at 20:50 UTC.
			if _, err := pool.Exec(context.Background(), `UPDATE elections SET start_date = '2026-11-01T20:50:00Z',
				end_date = '2026-11-01T23:00:00Z' WHERE id = $1`, f.election); err != nil {
				t.Fatal(err)
			}
			at := func(user, candidate, region string, ts time.Time) string {
				v := f.vote(user, candidate)
				v.Region, v.AcceptedAt = region, ts
				return jsonBody(t, v)
			}
			// 20:59:59.9 and 21:00:00 fall in different hours; +01:00 is converted to UTC. A vote
			// stamped before the opening (an edge clock running early) adds no time.
			h20 := time.Date(2026, 11, 1, 20, 59, 59, 900_000_000, time.UTC)
			h21 := time.Date(2026, 11, 1, 22, 0, 0, 0, time.FixedZone("CET", 3600))
			early := time.Date(2026, 11, 1, 20, 49, 59, 0, time.UTC)
			first := at("u1", f.candA, "eu-west-1", h20)
			send(t, f.queueURL, first, at("u2", f.candA, "eu-west-1", h20), at("u3", f.candA, "us-east-1", h20),
				at("u4", f.candA, "eu-west-1", h21), at("u5", f.candB, "eu-west-1", h21), at("u6", f.candB, "eu-west-1", early), first)
			p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), NewMetrics()).withInsertPath(path)
			res, err := p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 7, 30))
			if err != nil {
				t.Fatal(err)
			}
			if res != (BatchResult{Persisted: 6, Duplicates: 1}) {
				t.Fatalf("result %+v", res)
			}
			// A later redelivery adds nothing either.
			send(t, f.queueURL, first)
			if _, err := p.HandleBatch(context.Background(), receiveN(t, f.queueURL, 1, 30)); err != nil {
				t.Fatal(err)
			}
			rows, err := pool.Query(context.Background(), `SELECT to_char(hour AT TIME ZONE 'UTC', 'HH24'), region,
				CASE candidate_id WHEN $2 THEN 'A' WHEN $3 THEN 'B' END, votes, since_open_ms
				FROM vote_stats WHERE election_id = $1 ORDER BY 1, 2, 3`, f.election, f.candA, f.candB)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for rows.Next() {
				var hour, region, cand string
				var n, ms int64
				if err := rows.Scan(&hour, &region, &cand, &n, &ms); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s %s %s %d %d", hour, region, cand, n, ms))
			}
			// 20:59:59.9 is 599.9 s after the opening, 21:00 is 600 s.
			want := []string{"20 eu-west-1 A 2 1199800", "20 eu-west-1 B 1 0", "20 us-east-1 A 1 599900",
				"21 eu-west-1 A 1 600000", "21 eu-west-1 B 1 600000"}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("vote_stats = %v, want %v", got, want)
			}
			if a, b := count(t, f.election, f.candA), count(t, f.election, f.candB); a != 4 || b != 2 {
				t.Fatalf("counts %d and %d, want 4 and 2", a, b)
			}
		})
	}
}

// TestReconciliationGap: the gauge is the edge's counter minus the persisted votes, for active
// and recently closed elections only, and absent without Redis.
func TestReconciliationGap(t *testing.T) {
	ctx := context.Background()
	rs := stacktest.Redis(t)
	rdb, err := dedup.NewClient(rs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()

	f := newFixture(t)
	old := newFixture(t) // closed two days ago: out of the window
	if _, err := pool.Exec(ctx, `UPDATE elections SET status = 'CLOSED', start_date = now() - interval '3 days',
		end_date = now() - interval '2 days' WHERE id = $1`, old.election); err != nil {
		t.Fatal(err)
	}
	for key, n := range map[string]string{dedup.AcceptedKey(f.election, 0): "3", dedup.AcceptedKey(f.election, 7): "2", dedup.AcceptedKey(old.election, 0): "9"} {
		if err := rdb.Do(ctx, rdb.B().Set().Key(key).Value(n).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}

	send(t, f.queueURL, jsonBody(t, f.vote("u1", f.candA)), jsonBody(t, f.vote("u2", f.candA)), jsonBody(t, f.vote("u3", f.candB)))
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), NewMetrics())
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 3, 30)); err != nil {
		t.Fatal(err)
	}

	m := NewMetrics()
	cfg := testConfig(f.queueURL)
	cfg.ReconcileClosedWindow = 24 * time.Hour
	cfg.ReconcileInterval = time.Second
	r := NewReconciler(cfg, rdb, pool, quietLogger(), m)
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	series := func(m *Metrics, name, election string) (float64, bool) {
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, mm := range mf.GetMetric() {
				if mm.GetLabel()[0].GetValue() == election {
					return mm.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	gap := func(election string) (float64, bool) {
		return series(m, "voting_processor_reconciliation_gap_votes", election)
	}
	if g, ok := gap(f.election); !ok || g != 2 {
		t.Fatalf("gap = %v (present %v), want 5 acknowledged - 3 persisted = 2", g, ok)
	}
	if _, ok := gap(old.election); ok {
		t.Fatal("an election closed two days ago is still reconciled")
	}

	// The two missing votes arrive: the gap closes.
	send(t, f.queueURL, jsonBody(t, f.vote("u4", f.candB)), jsonBody(t, f.vote("u5", f.candB)))
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 2, 30)); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ := gap(f.election); g != 0 {
		t.Fatalf("gap = %v after every vote persisted, want 0", g)
	}

	// Per-region comparison uses vote_stats of that region only (the fixture's votes are from
	// eu-west-1).
	for region, want := range map[string]float64{"eu-west-1": 0, "us-east-1": 5} {
		cfg.ReconcileRegion = region
		m2 := NewMetrics()
		if err := NewReconciler(cfg, rdb, pool, quietLogger(), m2).Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if g, _ := series(m2, "voting_processor_reconciliation_gap_votes", f.election); g != want {
			t.Fatalf("gap for region %s = %v, want %v", region, g, want)
		}
	}

	// Redis down: the round fails, the last values stay, the failure is counted.
	rs.Stop()
	downCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := r.Reconcile(downCtx); err == nil {
		t.Fatal("reconcile with Redis down succeeded")
	}
	if g, _ := gap(f.election); g != 0 {
		t.Fatalf("gap changed to %v on a failed round", g)
	}

	// Without Redis there is no reconciliation series at all.
	if n := testutil.CollectAndCount(NewMetrics().Registry, "voting_processor_reconciliation_gap_votes"); n != 0 {
		t.Fatalf("%d reconciliation series without Redis", n)
	}
}

// The vote-loss figure survives the restart of the edge store: its counter is in the store's
// append-only file, so a kill -9 and restart neither zeroes it (which read as -N and hid real
// losses) nor double counts.
func TestVoteLossFigureSurvivesAStoreRestart(t *testing.T) {
	ctx := context.Background()
	rs := stacktest.Redis(t)
	rdb, err := dedup.NewClient(rs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()

	f := newFixture(t)
	send(t, f.queueURL, jsonBody(t, f.vote("u1", f.candA)), jsonBody(t, f.vote("u2", f.candA)), jsonBody(t, f.vote("u3", f.candB)))
	p := New(testConfig(f.queueURL), sqsc, pool, quietLogger(), NewMetrics()).WithEdgeStore(NewEdgeStore(rdb, time.Hour))
	if _, err := p.HandleBatch(ctx, receiveN(t, f.queueURL, 3, 30)); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	r := NewReconciler(testConfig(f.queueURL), rdb, pool, quietLogger(), m)
	gap := func() (accepted, gap float64) {
		t.Helper()
		// Right after a restart each pooled connection fails once before it is replaced.
		deadline := time.Now().Add(10 * time.Second)
		for {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			err := r.Reconcile(rctx)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reconcile: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, row := range r.rows {
			if row.electionID == f.election {
				return float64(row.accepted), float64(row.accepted - row.persisted)
			}
		}
		t.Fatal("election not reconciled")
		return 0, 0
	}
	if a, g := gap(); a != 3 || g != 0 {
		t.Fatalf("before the restart: accepted %v, gap %v; want 3 and 0", a, g)
	}
	if err := rs.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := rs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if a, g := gap(); a != 3 || g != 0 {
		t.Fatalf("after kill -9 and restart of the store: accepted %v, gap %v; want 3 and 0", a, g)
	}
}
