package schema_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/devstack/stacktest"
	"github.com/tvvote/voting/schema"
)

// migratedTo is a fresh database at a schema version, a connection to it, and a statement
// runner that fails the test.
func migratedTo(t *testing.T, version int64) (context.Context, *devstack.Postgres, *pgx.Conn, func(string, ...any)) {
	t.Helper()
	pg := stacktest.BarePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if err := schema.MigrateTo(ctx, pg.DSN, version); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return ctx, pg, conn, func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVoteStatsByCandidateRebuildsFromVotes: migration 11 splits the existing per-hour and
// per-region statistics by candidate and fills since_open_ms, from the votes they were
// maintained from; the per-(hour, region) totals stay what they were.
func TestVoteStatsByCandidateRebuildsFromVotes(t *testing.T) {
	ctx, pg, conn, exec := migratedTo(t, 10)
	e, a, b := uuid.NewString(), uuid.NewString(), uuid.NewString()
	exec(`INSERT INTO elections (id, title, status, start_date, end_date)
		VALUES ($1, 'Before the split', 'ACTIVE', '2026-11-01T18:30:00Z', '2026-11-01T21:00:00Z')`, e)
	exec(`INSERT INTO candidates (id, election_id, name) VALUES ($1, $3, 'Alice A'), ($2, $3, 'Bob B')`, a, b, e)
	// Seconds after the 18:30 start: 30, 90, 1800, 3600 and one vote accepted 2 s before the
	// start by an edge whose clock ran early (counts as 0).
	exec(`INSERT INTO votes (id, election_id, candidate_id, user_id, region, accepted_at) VALUES
		($2, $1, $6, 'u1', 'eu', '2026-11-01T18:30:30Z'),
		($3, $1, $6, 'u2', 'eu', '2026-11-01T18:31:30Z'),
		($4, $1, $7, 'u3', 'eu', '2026-11-01T19:00:00Z'),
		($5, $1, $7, 'u4', 'us', '2026-11-01T19:30:00Z'),
		($8, $1, $6, 'u5', 'us', '2026-11-01T18:29:58Z')`,
		e, uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString(), a, b, uuid.NewString())
	// What the processor of version 10 maintained for those votes.
	exec(`INSERT INTO vote_stats (election_id, hour, region, votes) VALUES
		($1, '2026-11-01T18:00:00Z', 'eu', 2), ($1, '2026-11-01T18:00:00Z', 'us', 1),
		($1, '2026-11-01T19:00:00Z', 'eu', 1), ($1, '2026-11-01T19:00:00Z', 'us', 1)`, e)

	if err := schema.MigrateTo(ctx, pg.DSN, 13); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT to_char(hour AT TIME ZONE 'UTC', 'HH24'), region,
		CASE candidate_id WHEN $2 THEN 'A' ELSE 'B' END, votes, since_open_ms
		FROM vote_stats WHERE election_id = $1 ORDER BY 1, 2, 3`, e, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var hour, region, cand string
		var votes, ms int64
		err := r.Scan(&hour, &region, &cand, &votes, &ms)
		return strings.Join([]string{hour, region, cand, strconv.FormatInt(votes, 10), strconv.FormatInt(ms, 10)}, " "), err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"18 eu A 2 120000", "18 us A 1 0", "19 eu B 1 1800000", "19 us B 1 3600000"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("vote_stats after the migration = %v, want %v", got, want)
	}

	// The new key takes the processor's upsert; a vote for a candidate of another election
	// cannot be counted.
	exec(`INSERT INTO vote_stats (election_id, hour, region, candidate_id, votes, since_open_ms)
		VALUES ($1, '2026-11-01T18:00:00Z', 'eu', $2, 1, 10)
		ON CONFLICT (election_id, hour, region, candidate_id) DO UPDATE
		SET votes = vote_stats.votes + EXCLUDED.votes, since_open_ms = vote_stats.since_open_ms + EXCLUDED.since_open_ms`, e, a)
	if _, err := conn.Exec(ctx, `INSERT INTO vote_stats (election_id, hour, region, candidate_id, votes)
		VALUES ($1, '2026-11-01T18:00:00Z', 'eu', $2, 1)`, e, uuid.NewString()); err == nil {
		t.Fatal("vote_stats accepted a candidate that is not in the election")
	}
	var votes, ms int64
	if err := conn.QueryRow(ctx, `SELECT votes, since_open_ms FROM vote_stats WHERE election_id = $1 AND candidate_id = $2
		AND region = 'eu' AND hour = '2026-11-01T18:00:00Z'`, e, a).Scan(&votes, &ms); err != nil || votes != 3 || ms != 120010 {
		t.Fatalf("upsert on the new key: %d votes, %d ms, %v", votes, ms, err)
	}
}

func TestHomeRegionKeepsTheStatsOfOneRegionFleets(t *testing.T) {
	ctx, pg, conn, exec := migratedTo(t, 13)
	e, a := uuid.NewString(), uuid.NewString()
	exec(`INSERT INTO elections (id, title, status, start_date, end_date)
		VALUES ($1, 'Before homes', 'ACTIVE', '2026-11-01T18:30:00Z', '2026-11-01T21:00:00Z')`, e)
	exec(`INSERT INTO candidates (id, election_id, name) VALUES ($1, $2, 'Alice A')`, a, e)
	exec(`INSERT INTO vote_stats (election_id, hour, region, candidate_id, votes, since_open_ms)
		VALUES ($1, '2026-11-01T18:00:00Z', 'eu', $2, 2, 60000), ($1, '2026-11-01T18:00:00Z', 'us', $2, 1, 5)`, e, a)

	if err := schema.Migrate(ctx, pg.DSN); err != nil {
		t.Fatal(err)
	}
	// Before homes a vote's store was its region's: the rows keep their figures under
	// home_region = region, with no duplicates.
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM vote_stats WHERE election_id = $1 AND home_region = region
		AND duplicates = 0 AND votes + since_open_ms IN (60002, 6)`, e).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d rows kept with home_region = region, want 2 (%v)", n, err)
	}
	// The processor's upserts on the new key: votes served in us for the eu store, and a second
	// vote refused there, land in a row of their own.
	for _, sql := range []string{
		`INSERT INTO vote_stats (election_id, hour, region, home_region, candidate_id, votes, since_open_ms)
		VALUES ($1, '2026-11-01T18:00:00Z', 'us', 'eu', $2, 1, 7)
		ON CONFLICT (election_id, hour, region, home_region, candidate_id) DO UPDATE
		SET votes = vote_stats.votes + EXCLUDED.votes, since_open_ms = vote_stats.since_open_ms + EXCLUDED.since_open_ms`,
		`INSERT INTO vote_stats (election_id, hour, region, home_region, candidate_id, duplicates)
		VALUES ($1, '2026-11-01T18:00:00Z', 'us', 'eu', $2, 1)
		ON CONFLICT (election_id, hour, region, home_region, candidate_id) DO UPDATE
		SET duplicates = vote_stats.duplicates + EXCLUDED.duplicates`,
	} {
		exec(sql, e, a)
	}
	var votes, dups int64
	if err := conn.QueryRow(ctx, `SELECT votes, duplicates FROM vote_stats WHERE election_id = $1 AND region = 'us'
		AND home_region = 'eu'`, e).Scan(&votes, &dups); err != nil || votes != 1 || dups != 1 {
		t.Fatalf("us served, eu stored: %d votes, %d duplicates, %v; want 1, 1", votes, dups, err)
	}

	if err := schema.MigrateDownTo(ctx, pg.DSN, 13); err != nil {
		t.Fatalf("down: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT sum(votes) FROM vote_stats WHERE election_id = $1 AND region = 'us'`, e).Scan(&votes); err != nil || votes != 2 {
		t.Fatalf("down: us holds %d votes, %v; want 2 (its own and the one for the eu store)", votes, err)
	}
}
