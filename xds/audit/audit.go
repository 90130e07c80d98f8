// Package audit writes the control plane's audit trail: who changed what, when, with the state
// before and after. Entries are written inside the transaction of the change they describe, so
// the trail and the data can never disagree.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SchedulerActor is the actor of changes the control plane makes on its own (window opens and
// closes at startDate and endDate).
const SchedulerActor = "scheduler"

// Actor is who asks for a change: the token's subject, and the request id for correlation.
type Actor struct {
	Subject string
	TraceID string
}

// Entry is one row of admin_audit.
type Entry struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	Entity     string          `json:"entity"`
	EntityID   string          `json:"entityId"`
	ElectionID string          `json:"electionId,omitempty"`
	Before     json.RawMessage `json:"before,omitempty"`
	After      json.RawMessage `json:"after,omitempty"`
	TraceID    string          `json:"traceId,omitempty"`
}

// Write adds one entry in tx. before and after are marshalled to JSON; nil means "did not exist".
func Write(ctx context.Context, tx pgx.Tx, who Actor, action, entity, entityID, electionID string, before, after any) error {
	b, err := jsonOrNil(before)
	if err != nil {
		return err
	}
	a, err := jsonOrNil(after)
	if err != nil {
		return err
	}
	var election *string
	if electionID != "" {
		election = &electionID
	}
	_, err = tx.Exec(ctx, `INSERT INTO admin_audit (actor, action, entity, entity_id, election_id, before, after, trace_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, who.Subject, action, entity, entityID, election, b, a, who.TraceID)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// Querier is what List reads through (a pool, a connection or a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// List returns the newest entries first, at most limit, optionally for one election.
func List(ctx context.Context, q Querier, electionID string, limit int) ([]Entry, error) {
	rows, err := q.Query(ctx, `SELECT id, at, actor, action, entity, entity_id, COALESCE(election_id::text, ''),
			before, after, trace_id
		FROM admin_audit WHERE $1 = '' OR election_id::text = $1 ORDER BY id DESC LIMIT $2`, electionID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Entry, error) {
		var e Entry
		var before, after []byte
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Entity, &e.EntityID, &e.ElectionID, &before, &after, &e.TraceID)
		e.Before, e.After = before, after
		return e, err
	})
}

func jsonOrNil(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if string(b) == "null" {
		return nil, nil
	}
	return b, nil
}
