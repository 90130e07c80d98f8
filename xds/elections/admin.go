package elections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/audit"
)

// Page is one page of the admin list.
type Page struct {
	Content       []Election `json:"content"`
	Page          int        `json:"page"`
	Size          int        `json:"size"`
	TotalElements int        `json:"totalElements"`
	TotalPages    int        `json:"totalPages"`
}

// List returns elections newest first, optionally only those in status.
func (s *Store) List(ctx context.Context, status string, page, size int) (Page, error) {
	out := Page{Content: []Election{}, Page: page, Size: size}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM elections WHERE $1 = '' OR status = $1`, status).
		Scan(&out.TotalElements); err != nil {
		return Page{}, fmt.Errorf("count elections: %w", err)
	}
	out.TotalPages = (out.TotalElements + size - 1) / size
	rows, err := s.pool.Query(ctx, `SELECT `+electionColumns+` FROM elections WHERE $1 = '' OR status = $1
		ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`, status, size, int64(page)*int64(size))
	if err != nil {
		return Page{}, fmt.Errorf("list elections: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanElection)
	if err != nil {
		return Page{}, fmt.Errorf("list elections: %w", err)
	}
	ids := make([]string, len(list))
	byID := make(map[string]*Election, len(list))
	for i := range list {
		ids[i] = list[i].ID
		byID[list[i].ID] = &list[i]
	}
	crows, err := s.pool.Query(ctx, `SELECT `+candidateColumns+` FROM candidates WHERE election_id = ANY($1::uuid[])
		ORDER BY created_at, id`, ids)
	if err != nil {
		return Page{}, fmt.Errorf("list candidates: %w", err)
	}
	cands, err := pgx.CollectRows(crows, scanCandidate)
	if err != nil {
		return Page{}, fmt.Errorf("list candidates: %w", err)
	}
	for _, c := range cands {
		e := byID[c.ElectionID]
		e.Candidates = append(e.Candidates, c)
	}
	out.Content = list
	return out, nil
}

// Create stores a new DRAFT election; every field is required.
func (s *Store) Create(ctx context.Context, who audit.Actor, f ElectionFields) (Election, error) {
	if f.Title == nil || f.Description == nil || f.StartDate == nil || f.EndDate == nil {
		return Election{}, invalid("title, description, startDate and endDate are required")
	}
	now := s.now()
	e := Election{ID: uuid.NewString(), Status: contract.StatusDraft, Candidates: []Candidate{}}
	if err := e.apply(f, now); err != nil {
		return Election{}, err
	}
	err := s.change(ctx, e.ID, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO elections (id, title, description, status, start_date, end_date)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at, updated_at`,
			e.ID, e.Title, e.Description, e.Status, e.StartDate, e.EndDate).Scan(&e.CreatedAt, &e.UpdatedAt); err != nil {
			return err
		}
		e.CreatedAt, e.UpdatedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC()
		return audit.Write(ctx, tx, who, "election.create", "election", e.ID, e.ID, nil, e)
	})
	return e, err
}

// Update changes an election that has not started voting.
func (s *Store) Update(ctx context.Context, who audit.Actor, id string, f ElectionFields) (Election, error) {
	var out Election
	err := s.change(ctx, id, func(tx pgx.Tx) error {
		before, err := lockElection(ctx, tx, id)
		if err != nil {
			return err
		}
		now := s.now()
		if err := before.checkEditable(now); err != nil {
			return err
		}
		after := before.clone()
		if err := after.apply(f, now); err != nil {
			return err
		}
		after.settle(now)
		if err := saveElection(ctx, tx, &after); err != nil {
			return err
		}
		out = after
		return audit.Write(ctx, tx, who, "election.update", "election", id, id, before, after)
	})
	return out, err
}

// Cancel soft-deletes an election: status CANCELLED, from any status. The edge then refuses
// its votes as "not open". Cancelling a cancelled election changes nothing.
func (s *Store) Cancel(ctx context.Context, who audit.Actor, id string) error {
	return s.change(ctx, id, func(tx pgx.Tx) error {
		before, err := lockElection(ctx, tx, id)
		if err != nil {
			return err
		}
		if before.Status == contract.StatusCancelled {
			return nil
		}
		after := before.clone()
		after.Status = contract.StatusCancelled
		if err := saveElection(ctx, tx, &after); err != nil {
			return err
		}
		return audit.Write(ctx, tx, who, "election.cancel", "election", id, id, before, after)
	})
}

// SetStatus opens (ACTIVE) or closes (CLOSED) voting by hand. A manual change wins over the
// schedule by moving the window itself:
//   - opening before startDate sets startDate to now: voting opens at once, and the scheduler
//     has nothing left to open;
//   - closing before endDate sets endDate to now: every edge stops admitting at once (it checks
//     the window on its own clock), and the scheduler never reopens a CLOSED election.
//
// Asking for the status an election already has changes nothing.
func (s *Store) SetStatus(ctx context.Context, who audit.Actor, id, status string) (Election, error) {
	if status != contract.StatusActive && status != contract.StatusClosed {
		return Election{}, invalid("status must be ACTIVE or CLOSED")
	}
	var out Election
	err := s.change(ctx, id, func(tx pgx.Tx) error {
		before, err := lockElection(ctx, tx, id)
		if err != nil {
			return err
		}
		now := dbTime(s.now())
		after := before.clone()
		var action string
		if status == contract.StatusActive {
			action, err = "election.open", after.open(now)
		} else {
			action, err = "election.close", after.close(now)
		}
		if err != nil {
			return err
		}
		out = after
		if after.Status == before.Status && after.StartDate.Equal(before.StartDate) && after.EndDate.Equal(before.EndDate) {
			return nil
		}
		if err := saveElection(ctx, tx, &after); err != nil {
			return err
		}
		out = after // with the new updatedAt
		return audit.Write(ctx, tx, who, action, "election", id, id, before, after)
	})
	return out, err
}

func (e *Election) open(now time.Time) error {
	switch e.Status {
	case contract.StatusActive:
		if !now.Before(e.EndDate) {
			return invalid("the voting window of election %s ended at %s", e.ID, e.EndDate.Format(time.RFC3339))
		}
		return nil
	case contract.StatusDraft, contract.StatusScheduled:
		if len(e.Candidates) < MinCandidates {
			return invalid("election %s needs at least %d candidates to open", e.ID, MinCandidates)
		}
		if !now.Before(e.EndDate) {
			return invalid("the voting window of election %s ended at %s; PUT a new endDate first", e.ID, e.EndDate.Format(time.RFC3339))
		}
		e.Status = contract.StatusActive
		if e.StartDate.After(now) {
			e.StartDate = now
		}
		return nil
	case contract.StatusClosed:
		return invalid("election %s is closed; a closed election is never reopened", e.ID)
	}
	return invalid("election %s is cancelled", e.ID)
}

func (e *Election) close(now time.Time) error {
	switch {
	case e.Status == contract.StatusClosed:
		return nil
	case e.Status == contract.StatusActive || (e.Status == contract.StatusScheduled && e.votingStarted(now)):
		e.Status = contract.StatusClosed
		if e.EndDate.After(now) {
			// endDate must stay after startDate, even for an election opened this microsecond.
			e.EndDate = now
			if !e.EndDate.After(e.StartDate) {
				e.EndDate = e.StartDate.Add(time.Microsecond)
			}
		}
		return nil
	case e.Status == contract.StatusCancelled:
		return invalid("election %s is cancelled", e.ID)
	}
	return invalid("voting in election %s has not started; DELETE the election to cancel it", e.ID)
}

// AddCandidate adds a candidate to an election that has not started voting.
func (s *Store) AddCandidate(ctx context.Context, who audit.Actor, electionID string, f CandidateFields) (Candidate, error) {
	if f.Name == nil || f.Party == nil {
		return Candidate{}, invalid("name and party are required")
	}
	c := Candidate{ID: uuid.NewString(), ElectionID: electionID}
	if err := c.apply(f); err != nil {
		return Candidate{}, err
	}
	err := s.change(ctx, electionID, func(tx pgx.Tx) error {
		e, err := lockElection(ctx, tx, electionID)
		if err != nil {
			return err
		}
		if err := e.checkEditable(s.now()); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO candidates (id, election_id, name, party, photo_url)
			VALUES ($1, $2, $3, $4, NULLIF($5, '')) RETURNING created_at`, c.ID, electionID, c.Name, c.Party, c.PhotoURL).
			Scan(&c.CreatedAt); err != nil {
			return err
		}
		c.CreatedAt = c.CreatedAt.UTC()
		if err := audit.Write(ctx, tx, who, "candidate.create", "candidate", c.ID, electionID, nil, c); err != nil {
			return err
		}
		after := e.clone()
		after.Candidates = append(after.Candidates, c)
		return s.resettle(ctx, tx, who, e, after)
	})
	return c, err
}

// UpdateCandidate changes a candidate of an election that has not started voting.
func (s *Store) UpdateCandidate(ctx context.Context, who audit.Actor, electionID, candidateID string, f CandidateFields) (Candidate, error) {
	var out Candidate
	err := s.change(ctx, electionID, func(tx pgx.Tx) error {
		e, err := lockElection(ctx, tx, electionID)
		if err != nil {
			return err
		}
		before, err := e.candidate(candidateID)
		if err != nil {
			return err
		}
		if err := e.checkEditable(s.now()); err != nil {
			return err
		}
		after := before
		if err := after.apply(f); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE candidates SET name = $2, party = $3, photo_url = NULLIF($4, '') WHERE id = $1`,
			candidateID, after.Name, after.Party, after.PhotoURL); err != nil {
			return err
		}
		out = after
		if err := audit.Write(ctx, tx, who, "candidate.update", "candidate", candidateID, electionID, before, after); err != nil {
			return err
		}
		// The ballot changed: the election's updatedAt says so.
		_, err = tx.Exec(ctx, `UPDATE elections SET updated_at = now() WHERE id = $1`, electionID)
		return err
	})
	return out, err
}

// DeleteCandidate removes a candidate of an election that has not started voting; a SCHEDULED
// election left with too few candidates goes back to DRAFT.
func (s *Store) DeleteCandidate(ctx context.Context, who audit.Actor, electionID, candidateID string) error {
	return s.change(ctx, electionID, func(tx pgx.Tx) error {
		e, err := lockElection(ctx, tx, electionID)
		if err != nil {
			return err
		}
		before, err := e.candidate(candidateID)
		if err != nil {
			return err
		}
		if err := e.checkEditable(s.now()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM candidates WHERE id = $1`, candidateID); err != nil {
			return err
		}
		if err := audit.Write(ctx, tx, who, "candidate.delete", "candidate", candidateID, electionID, before, nil); err != nil {
			return err
		}
		after := e.clone()
		after.Candidates = after.Candidates[:0]
		for _, c := range e.Candidates {
			if c.ID != candidateID {
				after.Candidates = append(after.Candidates, c)
			}
		}
		return s.resettle(ctx, tx, who, e, after)
	})
}

// resettle stores the status the candidate change gives the election (DRAFT ⇄ SCHEDULED), and
// audits it when it changed.
func (s *Store) resettle(ctx context.Context, tx pgx.Tx, who audit.Actor, before *Election, after Election) error {
	after.settle(s.now())
	if err := saveElection(ctx, tx, &after); err != nil {
		return err
	}
	switch {
	case after.Status == before.Status:
		return nil
	case after.Status == contract.StatusScheduled:
		return audit.Write(ctx, tx, who, "election.schedule", "election", after.ID, after.ID, before, after)
	default:
		return audit.Write(ctx, tx, who, "election.unschedule", "election", after.ID, after.ID, before, after)
	}
}

func (e *Election) candidate(id string) (Candidate, error) {
	for _, c := range e.Candidates {
		if c.ID == id {
			return c, nil
		}
	}
	return Candidate{}, refuse(contract.CodeNotFound, "candidate %s not found in election %s", id, e.ID)
}

func (e *Election) clone() Election {
	c := *e
	c.Candidates = append([]Candidate{}, e.Candidates...)
	return c
}

// change runs fn in a transaction and notifies the control plane in it, so the edge learns of
// the change at commit and never before.
func (s *Store) change(ctx context.Context, electionID string, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, contract.ChannelElectionsChanged, electionID)
		return err
	})
}

const electionColumns = `id::text, title, description, status, start_date, end_date, created_at, updated_at`

const candidateColumns = `id::text, election_id::text, name, party, COALESCE(photo_url, ''), created_at`

func scanElection(row pgx.CollectableRow) (Election, error) {
	e := Election{Candidates: []Candidate{}}
	err := row.Scan(&e.ID, &e.Title, &e.Description, &e.Status, &e.StartDate, &e.EndDate, &e.CreatedAt, &e.UpdatedAt)
	e.StartDate, e.EndDate, e.CreatedAt, e.UpdatedAt = e.StartDate.UTC(), e.EndDate.UTC(), e.CreatedAt.UTC(), e.UpdatedAt.UTC()
	return e, err
}

func scanCandidate(row pgx.CollectableRow) (Candidate, error) {
	var c Candidate
	err := row.Scan(&c.ID, &c.ElectionID, &c.Name, &c.Party, &c.PhotoURL, &c.CreatedAt)
	c.CreatedAt = c.CreatedAt.UTC()
	return c, err
}

// lockElection reads an election with its candidates and locks it for the transaction, so
// admins and the scheduler change one election one at a time.
func lockElection(ctx context.Context, tx pgx.Tx, id string) (*Election, error) {
	rows, err := tx.Query(ctx, `SELECT `+electionColumns+` FROM elections WHERE id = $1 FOR UPDATE`, id)
	if err != nil {
		return nil, err
	}
	e, err := pgx.CollectExactlyOneRow(rows, scanElection)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, refuse(contract.CodeElectionNotFound, "election %s not found", id)
	}
	if err != nil {
		return nil, err
	}
	crows, err := tx.Query(ctx, `SELECT `+candidateColumns+` FROM candidates WHERE election_id = $1 ORDER BY created_at, id`, id)
	if err != nil {
		return nil, err
	}
	if e.Candidates, err = pgx.CollectRows(crows, scanCandidate); err != nil {
		return nil, err
	}
	if e.Candidates == nil {
		e.Candidates = []Candidate{}
	}
	return &e, nil
}

// saveElection writes e's own fields and refreshes its updatedAt.
func saveElection(ctx context.Context, tx pgx.Tx, e *Election) error {
	err := tx.QueryRow(ctx, `UPDATE elections SET title = $2, description = $3, status = $4, start_date = $5,
		end_date = $6, updated_at = now() WHERE id = $1 RETURNING updated_at`,
		e.ID, e.Title, e.Description, e.Status, e.StartDate, e.EndDate).Scan(&e.UpdatedAt)
	e.UpdatedAt = e.UpdatedAt.UTC()
	return err
}
