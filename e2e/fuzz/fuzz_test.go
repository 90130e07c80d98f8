// Package fuzz runs property-based tests generated from the project's OpenAPI documents
// (contract/openapi/*.yaml) by schemathesis against the whole stack through Envoy: every answer
// to the generated requests, valid and invalid ones, must be documented there and match its
// schema, and none may be a 5xx.
package fuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/contract/openapi"
	"github.com/tvvote/voting/devstack"
)

// The election the documents' examples name (electionId and candidateId examples), so that the
// examples schemathesis sends first reach an open election and its candidates.
const (
	exampleElection  = "550e8400-e29b-41d4-a716-446655440000"
	exampleCandidate = "660e8400-e29b-41d4-a716-446655440000"
	otherCandidate   = "661e8400-e29b-41d4-a716-446655440001"
)

// The checks, bounds and methods of the runs are in schemathesis.toml beside this file: every
// check of the tool except those that need links between operations or a second user, which
// the documents do not describe.
func TestContractFuzz(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole stack and fuzzes it for about two minutes")
	}
	root, err := devstack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Missing tools are a failure, not a skip: CI installs them with `make tools`.
	st := filepath.Join(root, ".tools", "venv", "bin", "schemathesis")
	if _, err := os.Stat(st); err != nil {
		t.Fatalf("%s is missing: run `make tools`", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// No captcha and no rate limits: the fuzzer's cases are to reach the vote checks, not stop
	// at the bot defences (tested in e2e/).
	s, err := devstack.Start(ctx, devstack.Options{Region: "fuzz-region", CaptchaMode: "off",
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	seedExampleElection(ctx, t, s)
	castOneVote(ctx, t, s)

	// An admin's token: statistics need the permission, and an admin may ask for any viewer's
	// vote status. The fuzzer still tries every secured operation without it (ignored_auth).
	admin, err := s.Token(ctx, "fuzz-admin", true)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out", "fuzz")
	for _, doc := range openapi.Files {
		t.Run(doc, func(t *testing.T) {
			start := time.Now()
			cmd := exec.CommandContext(ctx, st, "--config-file", filepath.Join(root, "e2e", "fuzz", "schemathesis.toml"),
				"run", filepath.Join(root, "contract", "openapi", doc),
				"--url", s.EnvoyURL(),
				"--header", "Authorization: Bearer "+admin,
				"--report", "junit", "--report-junit-path", filepath.Join(out, doc+".junit.xml"),
				"--no-color")
			cmd.Dir = t.TempDir() // whatever the tool leaves behind stays out of the tree
			var output bytes.Buffer
			cmd.Stdout, cmd.Stderr = &output, &output
			err := cmd.Run()
			t.Logf("schemathesis on %s: %s", doc, time.Since(start).Round(time.Second))
			if err != nil {
				t.Fatalf("schemathesis found answers outside %s (%v); its report:\n%s", doc, err, output.String())
			}
			if testing.Verbose() {
				t.Log(output.String())
			}
		})
	}
}

// seedExampleElection writes an open election with the examples' ids, as devstack's
// SeedElection does, and waits until Envoy admits votes for it.
func seedExampleElection(ctx context.Context, t *testing.T, s *devstack.Stack) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Now().UTC()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO elections (id, title, description, status, start_date, end_date, eligible_voters)
			VALUES ($1, 'Presidential Election 2026', 'The documents'' example', 'ACTIVE', $2, $3, 1000)`,
			exampleElection, now.Add(-time.Minute), now.Add(time.Hour)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO candidates (id, election_id, name, party) VALUES
			($1, $3, 'Jane Doe', 'Progressive Party'), ($2, $3, 'John Smith', 'Conservative Party')`,
			exampleCandidate, otherCandidate, exampleElection); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify('elections_changed', $1)`, exampleElection)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitEnvoyKnows(ctx, exampleElection); err != nil {
		t.Fatal(err)
	}
}

// castOneVote votes in the example election as a viewer and waits until it is stored, so the
// statistics have an hour, a region and an average to show.
func castOneVote(ctx context.Context, t *testing.T, s *devstack.Stack) {
	t.Helper()
	tok, err := s.Token(ctx, uuid.NewString(), false)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contract.VoteRequest{ElectionID: exampleElection, CandidateID: exampleCandidate,
		CaptchaToken: "fuzz-captcha-token-0123456789"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.EnvoyURL()+"/api/v1/votes", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("vote: %d", resp.StatusCode)
	}
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(15 * time.Second); ; {
		var n int64
		if err := conn.QueryRow(ctx, `SELECT COALESCE(sum(votes), 0) FROM vote_stats WHERE election_id = $1`, exampleElection).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the vote was not stored within 15 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
