package elections_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/xds/audit"
	"github.com/tvvote/voting/xds/elections"
)

var admin = audit.Actor{Subject: "admin-1", TraceID: "11111111-2222-4333-8444-555555555555"}

// clock is a settable time source, so windows can be crossed without waiting.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func ptr[T any](v T) *T { return &v }

func fields(title string, start, end time.Time) elections.ElectionFields {
	return elections.ElectionFields{Title: ptr(title), Description: ptr("A test election"), StartDate: &start, EndDate: &end}
}

func candidate(name string) elections.CandidateFields {
	return elections.CandidateFields{Name: ptr(name), Party: ptr("Independent")}
}

// wantCode checks that err is a refusal with code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *elections.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
	if contract.Status(code) >= 500 {
		t.Fatalf("code %s is not a refusal", code)
	}
}

func auditActions(ctx context.Context, t *testing.T, pool *pgxpool.Pool, electionID string) []string {
	t.Helper()
	entries, err := audit.List(ctx, pool, electionID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(entries) - 1; i >= 0; i-- {
		out = append(out, entries[i].Actor+" "+entries[i].Action)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The whole life of an election through the admin operations, each audited.
func testLifecycle(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	clk := &clock{now: time.Now().UTC()}
	s := elections.NewStore(pool).WithClock(clk.Now)
	t0 := clk.Now()

	e, err := s.Create(ctx, admin, fields("Song of the Night", t0.Add(time.Hour), t0.Add(2*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != contract.StatusDraft || len(e.Candidates) != 0 || e.CreatedAt.IsZero() {
		t.Fatalf("created %+v", e)
	}
	a, err := s.AddCandidate(ctx, admin, e.ID, candidate("Aurora Lights"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AddCandidate(ctx, admin, e.ID, elections.CandidateFields{Name: ptr("Blue Harbour"), Party: ptr(""),
		PhotoURL: ptr("https://cdn.example/blue.jpg")})
	if err != nil {
		t.Fatal(err)
	}
	page, err := s.List(ctx, contract.StatusScheduled, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := find(page.Content, e.ID)
	if got == nil || len(got.Candidates) != 2 || got.Candidates[1].PhotoURL != "https://cdn.example/blue.jpg" {
		t.Fatalf("two candidates and a future window should schedule it: %+v", got)
	}

	// Back to DRAFT with one candidate, SCHEDULED again with two.
	if err := s.DeleteCandidate(ctx, admin, e.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	if st := status(ctx, t, s, e.ID); st != contract.StatusDraft {
		t.Fatalf("after removing a candidate: %s", st)
	}
	if _, err := s.AddCandidate(ctx, admin, e.ID, candidate("Copper Foxes")); err != nil {
		t.Fatal(err)
	}
	upd, err := s.Update(ctx, admin, e.ID, elections.ElectionFields{Title: ptr("Song of the Night (final)")})
	if err != nil || upd.Status != contract.StatusScheduled || upd.Title != "Song of the Night (final)" {
		t.Fatalf("update: %+v %v", upd, err)
	}
	if _, err := s.UpdateCandidate(ctx, admin, e.ID, b.ID, elections.CandidateFields{PhotoURL: ptr("")}); err != nil {
		t.Fatal(err)
	}

	// Opening by hand before the start moves the start to now.
	clk.Set(t0.Add(10 * time.Minute))
	open, err := s.SetStatus(ctx, admin, e.ID, contract.StatusActive)
	if err != nil {
		t.Fatal(err)
	}
	if open.Status != contract.StatusActive || !open.StartDate.Equal(clk.Now().Truncate(time.Microsecond)) {
		t.Fatalf("opened %+v", open)
	}
	if again, err := s.SetStatus(ctx, admin, e.ID, contract.StatusActive); err != nil || !again.StartDate.Equal(open.StartDate) {
		t.Fatalf("opening an open election: %+v %v", again, err)
	}

	// Once voting started nothing about the ballot may change.
	_, err = s.Update(ctx, admin, e.ID, elections.ElectionFields{Title: ptr("Too late")})
	wantCode(t, err, contract.CodeInvalidRequest)
	_, err = s.AddCandidate(ctx, admin, e.ID, candidate("Late Entry"))
	wantCode(t, err, contract.CodeInvalidRequest)
	_, err = s.UpdateCandidate(ctx, admin, e.ID, b.ID, elections.CandidateFields{Name: ptr("Renamed")})
	wantCode(t, err, contract.CodeInvalidRequest)
	wantCode(t, s.DeleteCandidate(ctx, admin, e.ID, b.ID), contract.CodeInvalidRequest)

	// Closing by hand before the end moves the end to now; a closed election stays closed.
	clk.Set(t0.Add(20 * time.Minute))
	closed, err := s.SetStatus(ctx, admin, e.ID, contract.StatusClosed)
	if err != nil {
		t.Fatal(err)
	}
	if closed.Status != contract.StatusClosed || !closed.EndDate.Equal(clk.Now().Truncate(time.Microsecond)) {
		t.Fatalf("closed %+v", closed)
	}
	_, err = s.SetStatus(ctx, admin, e.ID, contract.StatusActive)
	wantCode(t, err, contract.CodeInvalidRequest)
	if _, err := s.SetStatus(ctx, admin, e.ID, contract.StatusClosed); err != nil {
		t.Fatalf("closing a closed election: %v", err)
	}
	if err := s.Cancel(ctx, admin, e.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Cancel(ctx, admin, e.ID); err != nil {
		t.Fatalf("cancelling twice: %v", err)
	}
	_, err = s.SetStatus(ctx, admin, e.ID, contract.StatusClosed)
	wantCode(t, err, contract.CodeInvalidRequest)

	want := []string{
		"admin-1 election.create",
		"admin-1 candidate.create",
		"admin-1 candidate.create", "admin-1 election.schedule",
		"admin-1 candidate.delete", "admin-1 election.unschedule",
		"admin-1 candidate.create", "admin-1 election.schedule",
		"admin-1 election.update",
		"admin-1 candidate.update",
		"admin-1 election.open",
		"admin-1 election.close",
		"admin-1 election.cancel",
	}
	if got := auditActions(ctx, t, pool, e.ID); !equal(got, want) {
		t.Fatalf("audit trail\n%v\nwant\n%v", got, want)
	}
	entries, _ := audit.List(ctx, pool, e.ID, 1)
	if entries[0].TraceID != admin.TraceID || len(entries[0].Before) == 0 || len(entries[0].After) == 0 {
		t.Fatalf("cancel audit entry %+v", entries[0])
	}
}

func find(list []elections.Election, id string) *elections.Election {
	for i := range list {
		if list[i].ID == id {
			return &list[i]
		}
	}
	return nil
}

func status(ctx context.Context, t *testing.T, s *elections.Store, id string) string {
	t.Helper()
	page, err := s.List(ctx, "", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for p := 1; find(page.Content, id) == nil && p < page.TotalPages; p++ {
		if page, err = s.List(ctx, "", p, 100); err != nil {
			t.Fatal(err)
		}
	}
	e := find(page.Content, id)
	if e == nil {
		t.Fatalf("election %s not listed", id)
	}
	return e.Status
}

func testRefusals(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	s := elections.NewStore(pool)
	now := time.Now().UTC()
	for name, f := range map[string]elections.ElectionFields{
		"missing title":    {Description: ptr(""), StartDate: ptr(now.Add(time.Hour)), EndDate: ptr(now.Add(2 * time.Hour))},
		"short title":      fields("ab", now.Add(time.Hour), now.Add(2*time.Hour)),
		"end before start": fields("Backwards", now.Add(2*time.Hour), now.Add(time.Hour)),
		"start in past":    fields("Yesterday", now.Add(-time.Hour), now.Add(time.Hour)),
	} {
		_, err := s.Create(ctx, admin, f)
		if err == nil {
			t.Errorf("%s: created", name)
			continue
		}
		wantCode(t, err, contract.CodeInvalidRequest)
	}
	e, err := s.Create(ctx, admin, fields("Refusals", now.Add(time.Hour), now.Add(2*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AddCandidate(ctx, admin, e.ID, elections.CandidateFields{Name: ptr("Photo Person"), Party: ptr("x"), PhotoURL: ptr("not a url")})
	wantCode(t, err, contract.CodeInvalidRequest)
	_, err = s.AddCandidate(ctx, admin, e.ID, elections.CandidateFields{Name: ptr("No Party")})
	wantCode(t, err, contract.CodeInvalidRequest)
	// Opening needs two candidates; closing needs voting to have started.
	_, err = s.SetStatus(ctx, admin, e.ID, contract.StatusActive)
	wantCode(t, err, contract.CodeInvalidRequest)
	_, err = s.SetStatus(ctx, admin, e.ID, contract.StatusClosed)
	wantCode(t, err, contract.CodeInvalidRequest)
	_, err = s.SetStatus(ctx, admin, e.ID, "OPEN")
	wantCode(t, err, contract.CodeInvalidRequest)

	missing := "00000000-0000-4000-8000-000000000000"
	_, err = s.Update(ctx, admin, missing, elections.ElectionFields{})
	wantCode(t, err, contract.CodeElectionNotFound)
	wantCode(t, s.Cancel(ctx, admin, missing), contract.CodeElectionNotFound)
	_, err = s.AddCandidate(ctx, admin, missing, candidate("Nobody Home"))
	wantCode(t, err, contract.CodeElectionNotFound)
	_, err = s.UpdateCandidate(ctx, admin, e.ID, missing, candidate("Nobody Home"))
	wantCode(t, err, contract.CodeNotFound)
	wantCode(t, s.DeleteCandidate(ctx, admin, e.ID, missing), contract.CodeNotFound)
}

func testList(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	s := elections.NewStore(pool)
	now := time.Now().UTC()
	before, err := s.List(ctx, contract.StatusDraft, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		e, err := s.Create(ctx, admin, fields("Listed "+string(rune('A'+i)), now.Add(time.Hour), now.Add(2*time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	p0, err := s.List(ctx, contract.StatusDraft, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	total := before.TotalElements + 5
	if p0.TotalElements != total || p0.TotalPages != (total+1)/2 || p0.Size != 2 || p0.Page != 0 || len(p0.Content) != 2 {
		t.Fatalf("page 0: %+v", p0)
	}
	// Newest first.
	if p0.Content[0].ID != ids[4] || p0.Content[1].ID != ids[3] {
		t.Fatalf("order: %s %s", p0.Content[0].ID, p0.Content[1].ID)
	}
	last, err := s.List(ctx, contract.StatusDraft, p0.TotalPages, 2)
	if err != nil || len(last.Content) != 0 || last.Content == nil {
		t.Fatalf("past the last page: %+v %v", last, err)
	}
	for _, e := range p0.Content {
		if e.Status != contract.StatusDraft {
			t.Fatalf("filter let %s through", e.Status)
		}
	}
}

// The scheduler opens at startDate and closes at endDate by itself, audited as "scheduler";
// manual changes win because they move the window.
func testScheduler(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	clk := &clock{now: time.Now().UTC()}
	s := elections.NewStore(pool).WithClock(clk.Now)
	t0 := clk.Now()
	scheduled := func(title string, start, end time.Duration) elections.Election {
		t.Helper()
		e, err := s.Create(ctx, admin, fields(title, t0.Add(start), t0.Add(end)))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"Candidate One", "Candidate Two"} {
			if _, err := s.AddCandidate(ctx, admin, e.ID, candidate(c)); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	auto := scheduled("Scheduled both ways", time.Minute, 2*time.Minute)
	manualClose := scheduled("Closed by hand", time.Minute, 10*time.Minute)
	manualOpen := scheduled("Opened by hand", 5*time.Minute, 10*time.Minute)
	missed := scheduled("Whole window missed", time.Minute, 2*time.Minute)
	advance := func(at time.Duration) map[string]string {
		t.Helper()
		clk.Set(t0.Add(at))
		done, err := s.Advance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, tr := range done {
			out[tr.ElectionID] += tr.From + ">" + tr.To + " "
		}
		return out
	}

	if got := advance(30 * time.Second); got[auto.ID] != "" || got[missed.ID] != "" {
		t.Fatalf("opened before start: %v", got)
	}
	if got := advance(61 * time.Second); got[auto.ID] != "SCHEDULED>ACTIVE " || got[manualClose.ID] != "SCHEDULED>ACTIVE " {
		t.Fatalf("at start: %v", got)
	}
	if _, err := s.SetStatus(ctx, admin, manualClose.ID, contract.StatusClosed); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(90 * time.Second))
	if e, err := s.SetStatus(ctx, admin, manualOpen.ID, contract.StatusActive); err != nil || !e.StartDate.Equal(clk.Now().Truncate(time.Microsecond)) {
		t.Fatalf("manual open: %+v %v", e, err)
	}
	got := advance(121 * time.Second)
	if got[auto.ID] != "ACTIVE>CLOSED " || got[manualClose.ID] != "" || got[manualOpen.ID] != "" {
		t.Fatalf("at end: %v", got)
	}
	if st := status(ctx, t, s, manualClose.ID); st != contract.StatusClosed {
		t.Fatalf("manual close undone: %s", st)
	}
	if st := status(ctx, t, s, manualOpen.ID); st != contract.StatusActive {
		t.Fatalf("manual open undone: %s", st)
	}
	if got := auditActions(ctx, t, pool, auto.ID); !equal(got[len(got)-2:], []string{"scheduler election.open", "scheduler election.close"}) {
		t.Fatalf("auto audit %v", got)
	}
	// The whole window passed at once (e.g. the control plane was down): opened and closed,
	// both audited. (It was opened at 61 s above, so only the close is left; check both rows.)
	if got := auditActions(ctx, t, pool, missed.ID); !equal(got[len(got)-2:], []string{"scheduler election.open", "scheduler election.close"}) {
		t.Fatalf("missed audit %v", got)
	}
	gone := scheduled("Missed entirely", 3*time.Minute, 4*time.Minute)
	if got := advance(5 * time.Minute); got[gone.ID] != "SCHEDULED>ACTIVE ACTIVE>CLOSED " {
		t.Fatalf("missed window: %v", got)
	}
}

// RunScheduler wakes at the window's edges on the real clock.
func testSchedulerOnTime(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	s := elections.NewStore(pool)
	now := time.Now().UTC()
	e, err := s.Create(ctx, admin, fields("On time", now.Add(700*time.Millisecond), now.Add(1400*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"Candidate One", "Candidate Two"} {
		if _, err := s.AddCandidate(ctx, admin, e.ID, candidate(c)); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunScheduler(runCtx, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil, time.Hour)
	}()
	defer func() { stop(); <-done }()
	for _, want := range []struct {
		status string
		at     time.Time
	}{{contract.StatusActive, now.Add(700 * time.Millisecond)}, {contract.StatusClosed, now.Add(1400 * time.Millisecond)}} {
		for status(ctx, t, s, e.ID) != want.status {
			if time.Since(want.at) > 500*time.Millisecond {
				t.Fatalf("not %s 500 ms after %s", want.status, want.at)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if late := time.Since(want.at); late < 0 {
			t.Fatalf("%s %v early", want.status, -late)
		}
	}
}
