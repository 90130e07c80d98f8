package elections

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/audit"
)

// Transition is one status change the scheduler made.
type Transition struct {
	ElectionID string
	From, To   string
}

// Advance writes the status changes that the clock has made due: SCHEDULED elections whose
// startDate passed become ACTIVE, ACTIVE ones whose endDate passed become CLOSED (a SCHEDULED
// election whose whole window passed, e.g. while the control plane was down, goes through
// both). Each change is audited with actor "scheduler". Rows another transaction holds are
// skipped and picked up on the next round, so several control planes may run this at once.
//
// The edge enforces the window itself; these transitions record in PostgreSQL what the edge
// already does, for the admin API, the results and the audit trail.
func (s *Store) Advance(ctx context.Context) ([]Transition, error) {
	var done []Transition
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		done = done[:0]
		now := dbTime(s.now())
		rows, err := tx.Query(ctx, `SELECT id::text FROM elections
			WHERE (status = 'SCHEDULED' AND start_date <= $1) OR (status = 'ACTIVE' AND end_date <= $1)
			ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED`, now)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		who := audit.Actor{Subject: audit.SchedulerActor}
		for _, id := range ids {
			before, err := lockElection(ctx, tx, id)
			if err != nil {
				return err
			}
			cur := *before
			for _, step := range []struct{ from, to, action string }{
				{contract.StatusScheduled, contract.StatusActive, "election.open"},
				{contract.StatusActive, contract.StatusClosed, "election.close"},
			} {
				if cur.Status != step.from || (step.to == contract.StatusActive && now.Before(cur.StartDate)) ||
					(step.to == contract.StatusClosed && now.Before(cur.EndDate)) {
					continue
				}
				next := cur.clone()
				next.Status = step.to
				if err := saveElection(ctx, tx, &next); err != nil {
					return err
				}
				if err := audit.Write(ctx, tx, who, step.action, "election", id, id, cur, next); err != nil {
					return err
				}
				done = append(done, Transition{ElectionID: id, From: cur.Status, To: next.Status})
				cur = next
			}
		}
		if len(done) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, 'scheduler')`, contract.ChannelElectionsChanged)
		return err
	})
	return done, err
}

// NextDue is when Advance next has something to do, or zero if nothing is scheduled.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	var next *time.Time
	err := s.pool.QueryRow(ctx, `SELECT LEAST(
			(SELECT min(start_date) FROM elections WHERE status = 'SCHEDULED'),
			(SELECT min(end_date) FROM elections WHERE status = 'ACTIVE'))`).Scan(&next)
	if err != nil || next == nil {
		return time.Time{}, err
	}
	return *next, nil
}

// RunScheduler calls Advance when the next window opens or closes, and at least every
// maxSleep (a change made elsewhere, a database that was down), until ctx ends. wake
// (elections changed) makes it look again at once.
func (s *Store) RunScheduler(ctx context.Context, log *slog.Logger, wake <-chan struct{}, maxSleep time.Duration) {
	for ctx.Err() == nil {
		done, err := s.Advance(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("scheduler: advance failed; retrying", "err", err)
		}
		for _, t := range done {
			log.Info("scheduler: election status changed", "electionId", t.ElectionID, "from", t.From, "to", t.To)
		}
		sleep := maxSleep
		if due, err := s.NextDue(ctx); err == nil && !due.IsZero() {
			// The floor keeps a row another transaction holds (due, but skipped) from spinning
			// the loop.
			sleep = min(maxSleep, max(time.Until(due), 20*time.Millisecond))
		}
		timer := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-wake:
		}
		timer.Stop()
	}
}
