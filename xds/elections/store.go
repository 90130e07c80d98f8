// Package elections owns elections and candidates in PostgreSQL, the source of truth: the
// admin operations with their state machine and audit trail, the scheduler that opens and
// closes voting windows, the view the edge gets, and the change notifications.
package elections

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// ClosedGrace keeps a CLOSED election on the edge this long after its end, so a late vote gets
// "election not open" rather than "unknown election".
const ClosedGrace = time.Hour

// Store reads and changes elections and their candidates.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
}

// NewStore works through pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, now: time.Now}
}

// WithClock makes the store read time from now, for tests of windows and schedules.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	return &c
}

const loadQuery = `
SELECT e.id::text, e.status, e.start_date, e.end_date,
       COALESCE(array_agg(c.id::text ORDER BY c.id) FILTER (WHERE c.id IS NOT NULL), '{}')
FROM elections e
LEFT JOIN candidates c ON c.election_id = e.id
WHERE e.status IN ('SCHEDULED', 'ACTIVE')
   OR (e.status IN ('CLOSED', 'CANCELLED') AND e.end_date > $1)
GROUP BY e.id
ORDER BY e.start_date, e.id`

// Load returns the edge's view of the elections, ordered so that equal content gives equal
// results:
//   - SCHEDULED and ACTIVE elections go out as ACTIVE with their window: the edge admits votes
//     exactly within [startDate, endDate) on its own clock, so a window opens and closes on
//     time even while the control plane is down or the scheduler is late;
//   - CLOSED and CANCELLED elections stay for ClosedGrace after their end, so a late vote gets
//     "election not open" rather than "unknown election";
//   - DRAFT elections are not published.
func (s *Store) Load(ctx context.Context) ([]edgeconfig.Election, error) {
	rows, err := s.pool.Query(ctx, loadQuery, s.now().Add(-ClosedGrace))
	if err != nil {
		return nil, fmt.Errorf("load elections: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (edgeconfig.Election, error) {
		var e edgeconfig.Election
		err := row.Scan(&e.ID, &e.Status, &e.StartDate, &e.EndDate, &e.CandidateIDs)
		if e.Status == contract.StatusScheduled {
			e.Status = contract.StatusActive
		}
		// UTC so that the same instant always marshals to the same JSON.
		e.StartDate, e.EndDate = e.StartDate.UTC(), e.EndDate.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("load elections: %w", err)
	}
	return out, nil
}

// Watch LISTENs on contract.ChannelElectionsChanged on a dedicated connection and signals the returned channel
// (coalescing bursts) on every notification and after every reconnect, since notifications
// sent while disconnected are lost. It stops when ctx ends.
func Watch(ctx context.Context, dsn string, log *slog.Logger) <-chan struct{} {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	go func() {
		backoff := 500 * time.Millisecond
		for ctx.Err() == nil {
			connected, err := listen(ctx, dsn, signal)
			if ctx.Err() != nil {
				return
			}
			if connected {
				backoff = 500 * time.Millisecond
			}
			log.Warn("elections LISTEN lost; periodic reload continues", "err", err, "retry_in", backoff.String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}()
	return changed
}

// listen reports whether it got as far as listening, so the caller can reset its backoff.
func listen(ctx context.Context, dsn string, signal func()) (bool, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+contract.ChannelElectionsChanged); err != nil {
		return false, err
	}
	signal()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return true, err
		}
		signal()
	}
}
