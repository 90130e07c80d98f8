package elections_test

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/elections"
	"github.com/tvvote/voting/xds/server"
	"github.com/tvvote/voting/xds/snapshot"
)

// TestOnPostgres runs against a real PostgreSQL; a missing server fails the test.
func TestOnPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := stacktest.Postgres(t)
	pg, pool := db.Postgres, db.Pool
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))

	t.Run("LoadReturnsWhatTheEdgeNeeds", func(t *testing.T) { testLoad(ctx, t, pool) })
	t.Run("NotifyTriggersReload", func(t *testing.T) { testNotify(ctx, t, pool, pg.DSN, log) })
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(ctx, t, pool) })
	t.Run("Refusals", func(t *testing.T) { testRefusals(ctx, t, pool) })
	t.Run("List", func(t *testing.T) { testList(ctx, t, pool) })
	t.Run("Scheduler", func(t *testing.T) { testScheduler(ctx, t, pool) })
	t.Run("SchedulerOnTime", func(t *testing.T) { testSchedulerOnTime(ctx, t, pool) })
}

func insertElection(ctx context.Context, t *testing.T, pool *pgxpool.Pool, id, status string, start, end time.Time, candidates ...string) {
	t.Helper()
	if _, err := pool.Exec(ctx, `INSERT INTO elections (id, title, status, start_date, end_date) VALUES ($1, $2, $3, $4, $5)`,
		id, "Election "+id[:8], status, start, end); err != nil {
		t.Fatal(err)
	}
	for _, c := range candidates {
		if _, err := pool.Exec(ctx, `INSERT INTO candidates (id, election_id, name) VALUES ($1, $2, $3)`,
			c, id, "Candidate "+c[:8]); err != nil {
			t.Fatal(err)
		}
	}
}

func testLoad(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	now := time.Now().UTC().Truncate(time.Second)
	const (
		active    = "a0000000-0000-4000-8000-000000000001"
		scheduled = "a0000000-0000-4000-8000-000000000002"
		draft     = "a0000000-0000-4000-8000-000000000003"
		cancelled = "a0000000-0000-4000-8000-000000000004"
		closedNow = "a0000000-0000-4000-8000-000000000005"
		closedOld = "a0000000-0000-4000-8000-000000000006"
		cand1     = "c0000000-0000-4000-8000-000000000001"
		cand2     = "c0000000-0000-4000-8000-000000000002"
		cand3     = "c0000000-0000-4000-8000-000000000003"
	)
	insertElection(ctx, t, pool, active, "ACTIVE", now.Add(-10*time.Minute), now.Add(time.Hour), cand2, cand1)
	insertElection(ctx, t, pool, scheduled, "SCHEDULED", now.Add(24*time.Hour), now.Add(25*time.Hour))
	insertElection(ctx, t, pool, draft, "DRAFT", now, now.Add(time.Hour))
	insertElection(ctx, t, pool, cancelled, "CANCELLED", now, now.Add(time.Hour))
	insertElection(ctx, t, pool, closedNow, "CLOSED", now.Add(-70*time.Minute), now.Add(-10*time.Minute), cand3)
	insertElection(ctx, t, pool, closedOld, "CLOSED", now.Add(-3*time.Hour), now.Add(-2*time.Hour))

	got, err := elections.NewStore(pool).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// SCHEDULED goes out as ACTIVE: the edge opens it at its startDate on its own clock.
	// CANCELLED stays within the grace, so late votes are "not open" rather than "unknown".
	want := []edgeconfig.Election{
		{ID: closedNow, Status: "CLOSED", StartDate: now.Add(-70 * time.Minute), EndDate: now.Add(-10 * time.Minute), CandidateIDs: []string{cand3}},
		{ID: active, Status: "ACTIVE", StartDate: now.Add(-10 * time.Minute), EndDate: now.Add(time.Hour), CandidateIDs: []string{cand1, cand2}},
		{ID: cancelled, Status: "CANCELLED", StartDate: now, EndDate: now.Add(time.Hour), CandidateIDs: []string{}},
		{ID: scheduled, Status: "ACTIVE", StartDate: now.Add(24 * time.Hour), EndDate: now.Add(25 * time.Hour), CandidateIDs: []string{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load =\n%+v\nwant\n%+v", got, want)
	}
}

// A NOTIFY on elections_changed reaches the edge's snapshot long before the periodic reload.
func testNotify(ctx context.Context, t *testing.T, pool *pgxpool.Pool, dsn string, log *slog.Logger) {
	b, err := snapshot.NewBuilder(snapshot.Settings{ListenerPort: 8080, ResultsAddr: "127.0.0.1:8082"}, snapshot.WithoutVoteFilter())
	if err != nil {
		t.Fatal(err)
	}
	cp := server.New(b, log, prometheus.NewRegistry())
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		store := elections.NewStore(pool)
		src := server.SourceFunc(func(ctx context.Context) (snapshot.State, error) {
			es, err := store.Load(ctx)
			return snapshot.State{Elections: es}, err
		})
		cp.Run(runCtx, src, elections.Watch(runCtx, dsn, log), time.Hour)
	}()
	defer func() { stop(); <-done }()
	waitVersion := func(min uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for cp.Version() < min {
			if time.Now().After(deadline) {
				t.Fatalf("version %d, want >= %d", cp.Version(), min)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitVersion(1)
	// Let the reload that Watch asks for when it first connects pass, so that only the NOTIFY
	// below can explain a new version.
	time.Sleep(500 * time.Millisecond)
	before := cp.Version()
	now := time.Now().UTC()
	insertElection(ctx, t, pool, "b0000000-0000-4000-8000-000000000001", "ACTIVE", now, now.Add(time.Hour))
	if _, err := pool.Exec(ctx, "SELECT pg_notify($1, '')", contract.ChannelElectionsChanged); err != nil {
		t.Fatal(err)
	}
	waitVersion(before + 1)
}
