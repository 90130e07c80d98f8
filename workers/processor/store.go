package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tvvote/voting/contract"
)

// maxNotifyPayload stays below PostgreSQL's 8000-byte NOTIFY payload limit with a margin.
const maxNotifyPayload = 7800

// persistSQL inserts a batch, counts what it inserted and maintains the statistics, in one
// statement, so neither vote_counts nor vote_stats can diverge from the votes table. %s is the
// CTE named input that yields the batch.
//
//   - known: votes whose (election, candidate) does not exist are left out rather than failing
//     the foreign key and aborting the whole batch; the caller learns them from the 'u' rows.
//   - ON CONFLICT DO NOTHING without a target covers both unique keys: (election_id, user_id),
//     the one-vote-per-viewer barrier, and the primary key, so a redelivered message (same vote
//     id) and a vote id reused for another row are both dropped instead of raising an error.
//   - ORDER BY in every insert: concurrent writers take row and index locks in one order,
//     which rules out deadlocks between them on duplicates and on the shared count rows. Any
//     consistent order will do, so user_id sorts bytewise (COLLATE "C"): the database's
//     linguistic collation made that sort a tenth of the statement.
//   - counted and stats run although the final SELECT reads only counted: PostgreSQL executes
//     every data-modifying CTE exactly once. Their DO UPDATE adds to the hot rows last, so the
//     row locks that serialise concurrent writers are held only from there to COMMIT.
//   - vote_stats.hour is date_trunc in UTC explicitly, independent of the session time zone.
//   - vote_stats.since_open_ms adds each vote's milliseconds from its election's start_date to
//     its accepted_at (never negative: an edge clock running early must not subtract), so the
//     statistics' averageVotingTime is a division, not a scan of votes.
//   - Vote ids are the edge's UUIDv7 (time-ordered) and are stored as they come: the primary-key
//     index then grows at its right edge instead of splitting pages all over; never mint ids here.
//
// Result rows: ('i', vote id, NULL, NULL, 0, 0) for each inserted vote,
// ('u', vote id, election, candidate, 0, 0) for each unknown pair,
// ('c', NULL, election, candidate, delta, new total) for each changed count.
const persistSQL = `
WITH %s,
known AS (
    SELECT i.* FROM input i
    WHERE EXISTS (SELECT 1 FROM candidates c WHERE c.election_id = i.election_id AND c.id = i.candidate_id)
), inserted AS (
    INSERT INTO votes (id, election_id, candidate_id, user_id, region, home_region, request_id, accepted_at)
    SELECT id, election_id, candidate_id, user_id, region, home_region, request_id, accepted_at
    FROM known
    ORDER BY election_id, user_id COLLATE "C"
    ON CONFLICT DO NOTHING
    RETURNING id, election_id, candidate_id, region, home_region, accepted_at
), deltas AS (
    SELECT election_id, candidate_id, count(*) AS delta
    FROM inserted
    GROUP BY election_id, candidate_id
), counted AS (
    INSERT INTO vote_counts (election_id, candidate_id, votes)
    SELECT election_id, candidate_id, delta FROM deltas
    ORDER BY election_id, candidate_id
    ON CONFLICT (election_id, candidate_id) DO UPDATE
        SET votes = vote_counts.votes + EXCLUDED.votes, updated_at = now()
    RETURNING election_id, candidate_id, votes
), stats AS (
    INSERT INTO vote_stats (election_id, hour, region, home_region, candidate_id, votes, since_open_ms)
    SELECT i.election_id, date_trunc('hour', i.accepted_at, 'UTC'), i.region, i.home_region, i.candidate_id, count(*),
           sum(greatest(0, round(extract(epoch FROM i.accepted_at - e.start_date) * 1000)))::bigint
    FROM inserted i
    JOIN elections e ON e.id = i.election_id
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (election_id, hour, region, home_region, candidate_id) DO UPDATE
        SET votes = vote_stats.votes + EXCLUDED.votes, since_open_ms = vote_stats.since_open_ms + EXCLUDED.since_open_ms
)
SELECT 'i', id::text, NULL, NULL, 0::bigint, 0::bigint FROM inserted
UNION ALL
SELECT 'u', i.id::text, i.election_id::text, i.candidate_id::text, 0, 0 FROM input i
WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.election_id = i.election_id AND c.id = i.candidate_id)
UNION ALL
SELECT 'c', NULL, c.election_id::text, c.candidate_id::text, d.delta, c.votes
FROM counted c JOIN deltas d USING (election_id, candidate_id)`

const inputColumns = `id, election_id, candidate_id, user_id, region, home_region, request_id, accepted_at`

var unnestSQL = fmt.Sprintf(persistSQL, `input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[])
        AS t(`+inputColumns+`)
)`)

// inserter sends a batch to the server and runs persistSQL over it in tx, returning its rows.
type inserter func(ctx context.Context, tx pgx.Tx, votes []vote) (pgx.Rows, error)

// insertUnnest binds the batch as eight arrays and unnests them: one round trip, works through
// any connection pooler. Measured faster than COPY (BENCHMARKS.md, insertcopy.go).
func insertUnnest(ctx context.Context, tx pgx.Tx, votes []vote) (pgx.Rows, error) {
	ids := make([]string, len(votes))
	es := make([]string, len(votes))
	cs := make([]string, len(votes))
	users := make([]string, len(votes))
	regions := make([]string, len(votes))
	homes := make([]string, len(votes))
	reqIDs := make([]string, len(votes))
	accepted := make([]time.Time, len(votes))
	for i, v := range votes {
		ids[i], es[i], cs[i], users[i] = v.ID, v.ElectionID, v.CandidateID, v.UserID
		regions[i], homes[i], reqIDs[i], accepted[i] = v.Region, v.home(), v.RequestID, v.AcceptedAt
	}
	return tx.Query(ctx, unnestSQL, ids, es, cs, users, regions, homes, reqIDs, accepted)
}

type pair struct{ electionID, candidateID string }

// txResult is what one batch transaction did.
type txResult struct {
	inserted  map[string]bool       // vote ids actually inserted
	unknown   map[string]bool       // vote ids whose (election, candidate) does not exist: not inserted
	deltas    []contract.CountDelta // sorted by election, candidate
	elections []string              // elections whose counts changed, sorted
}

// beginner is the part of *pgxpool.Pool the processor uses.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// persist runs one transaction: insert the batch, bump counts and statistics, notify listeners.
// Nothing is visible (not even the notification) until it commits. votes must not repeat a
// vote id.
func persist(ctx context.Context, db beginner, insert inserter, votes []vote) (txResult, error) {
	res := txResult{inserted: make(map[string]bool, len(votes)), unknown: map[string]bool{}}
	tx, err := db.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	rows, err := insert(ctx, tx, votes)
	if err != nil {
		return res, fmt.Errorf("insert votes: %w", err)
	}
	for rows.Next() {
		var (
			kind                string
			id                  *string
			election, candidate *string
			delta, total        int64
		)
		if err := rows.Scan(&kind, &id, &election, &candidate, &delta, &total); err != nil {
			rows.Close()
			return res, fmt.Errorf("scan result: %w", err)
		}
		switch kind {
		case "i":
			res.inserted[*id] = true
		case "u":
			res.unknown[*id] = true
		case "c":
			res.deltas = append(res.deltas, contract.CountDelta{ElectionID: *election, CandidateID: *candidate, Delta: delta, Votes: total})
		}
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("insert votes: %w", err)
	}
	slices.SortFunc(res.deltas, func(a, b contract.CountDelta) int {
		return strings.Compare(a.ElectionID+a.CandidateID, b.ElectionID+b.CandidateID)
	})
	res.elections = electionsOf(res.deltas)

	if len(res.deltas) > 0 {
		// NOTIFY inside the transaction is delivered only on commit, so listeners never see a
		// count that is later rolled back.
		payloads, err := notifyPayloads(res.deltas)
		if err != nil {
			return res, err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, contract.ChannelVoteCounts, payloads); err != nil {
			return res, fmt.Errorf("notify: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

func electionsOf(deltas []contract.CountDelta) []string {
	var out []string
	for _, d := range deltas {
		if len(out) == 0 || out[len(out)-1] != d.ElectionID {
			out = append(out, d.ElectionID)
		}
	}
	return out
}

// notifyPayloads packs sorted deltas into as few CountsChanged payloads as fit the NOTIFY limit.
func notifyPayloads(deltas []contract.CountDelta) ([]string, error) {
	var (
		payloads []string
		chunk    []contract.CountDelta
		size     int
	)
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		b, err := json.Marshal(contract.CountsChanged{ElectionIDs: electionsOf(chunk), Deltas: chunk})
		if err != nil {
			return err
		}
		if len(b) >= 8000 {
			return fmt.Errorf("notify payload of %d bytes exceeds the 8000-byte limit", len(b))
		}
		payloads = append(payloads, string(b))
		chunk, size = nil, 0
		return nil
	}
	const envelope = len(`{"electionIds":[],"deltas":[]}`)
	for _, d := range deltas {
		b, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		// Each entry costs its JSON, a comma, and at worst one more quoted election id.
		cost := len(b) + 1 + len(d.ElectionID) + 3
		if len(chunk) > 0 && envelope+size+cost > maxNotifyPayload {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		chunk = append(chunk, d)
		size += cost
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return payloads, nil
}

// isDataError reports whether PostgreSQL rejected the rows themselves (SQLSTATE class 22, data
// exception, or 23, integrity constraint violation): retrying the same rows cannot succeed, so
// the batch is split to isolate the culprit. Everything else (connection loss, timeouts,
// shutdown, deadlocks, a failing trigger) may pass on a retry of the very same batch.
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")
	}
	return false
}
