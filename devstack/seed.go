package devstack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
)

// Election is a seeded election with its candidates.
type Election struct {
	ID         string
	Title      string
	Candidates []Candidate
}

// Candidate is a seeded candidate.
type Candidate struct {
	ID, Name, Party string
}

// SeedElection writes an ACTIVE election whose window opened a minute ago and lasts for
// `open`, straight into PostgreSQL (the source of truth the control plane reads).
func (s *Stack) SeedElection(ctx context.Context, title string, open time.Duration, candidates ...string) (Election, error) {
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		return Election{}, err
	}
	defer conn.Close(ctx)
	e := Election{ID: uuid.NewString(), Title: title}
	now := time.Now().UTC()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return Election{}, err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO elections (id, title, description, status, start_date, end_date)
		VALUES ($1, $2, $3, 'ACTIVE', $4, $5)`, e.ID, title, "Seeded for local runs", now.Add(-time.Minute), now.Add(open)); err != nil {
		return Election{}, err
	}
	for _, name := range candidates {
		c := Candidate{ID: uuid.NewString(), Name: name, Party: "Independent"}
		if _, err := tx.Exec(ctx, `INSERT INTO candidates (id, election_id, name, party) VALUES ($1, $2, $3, $4)`,
			c.ID, e.ID, c.Name, c.Party); err != nil {
			return Election{}, err
		}
		e.Candidates = append(e.Candidates, c)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, contract.ChannelElectionsChanged, e.ID); err != nil {
		return Election{}, err
	}
	return e, tx.Commit(ctx)
}

// WaitEnvoyKnows waits until the running configuration of every Envoy of the stack (each
// region's) holds the election.
func (s *Stack) WaitEnvoyKnows(ctx context.Context, electionID string) error {
	if err := s.waitEdgeKnows(ctx, ComponentEnvoy, s.Ports.EnvoyAdmin, electionID); err != nil {
		return err
	}
	for _, r := range s.Peers {
		if err := s.waitEdgeKnows(ctx, InRegion(ComponentEnvoy, r.Name), r.AdminPort, electionID); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) waitEdgeKnows(ctx context.Context, component string, adminPort int, electionID string) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/config_dump", adminPort)
	return waitFor(ctx, s.proc(component), 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), electionID) {
			return fmt.Errorf("election %s not in envoy's config yet", electionID)
		}
		return nil
	})
}
