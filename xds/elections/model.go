package elections

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tvvote/voting/contract"
)

// Election statuses (contract.Status*) move like this:
//
//	DRAFT ──(≥ MinCandidates candidates and a future startDate)──▶ SCHEDULED   automatic, both ways
//	SCHEDULED ──startDate (scheduler) or PATCH ACTIVE──▶ ACTIVE
//	DRAFT ──PATCH ACTIVE (≥ MinCandidates candidates)──▶ ACTIVE
//	ACTIVE ──endDate (scheduler) or PATCH CLOSED──▶ CLOSED
//	any ──DELETE──▶ CANCELLED

// MinCandidates is how many candidates an election needs before it can be scheduled or opened:
// a vote with one choice is not a vote.
const MinCandidates = 2

// Field limits of the contract's CreateElectionRequest and CreateCandidateRequest.
const (
	titleMin, titleMax = 3, 200
	descriptionMax     = 2000
	nameMin, nameMax   = 3, 200
	partyMax           = 100
	photoURLMax        = 2048
)

// Election is the contract's Election.
type Election struct {
	ID          string      `json:"id"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Status      string      `json:"status"`
	StartDate   time.Time   `json:"startDate"`
	EndDate     time.Time   `json:"endDate"`
	Candidates  []Candidate `json:"candidates"`
	CreatedAt   time.Time   `json:"createdAt"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

// Candidate is the contract's Candidate.
type Candidate struct {
	ID         string    `json:"id"`
	ElectionID string    `json:"electionId"`
	Name       string    `json:"name"`
	Party      string    `json:"party"`
	PhotoURL   string    `json:"photoUrl,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
}

// ElectionFields are the settable fields of an election; nil leaves a field as it is.
type ElectionFields struct {
	Title       *string    `json:"title"`
	Description *string    `json:"description"`
	StartDate   *time.Time `json:"startDate"`
	EndDate     *time.Time `json:"endDate"`
}

// CandidateFields are the settable fields of a candidate; nil leaves a field as it is, and an
// empty photoUrl removes the photo.
type CandidateFields struct {
	Name     *string `json:"name"`
	Party    *string `json:"party"`
	PhotoURL *string `json:"photoUrl"`
}

// Error is a refusal with a contract error code; the admin API renders it as ErrorResponse.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func refuse(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error {
	return refuse(contract.CodeInvalidRequest, format, args...)
}

// votingStarted says whether the edge may already admit votes: ACTIVE and CLOSED elections,
// and SCHEDULED ones whose startDate has passed (the edge opens those on its own clock, before
// the scheduler writes ACTIVE).
func (e *Election) votingStarted(now time.Time) bool {
	switch e.Status {
	case contract.StatusActive, contract.StatusClosed:
		return true
	case contract.StatusScheduled:
		return !now.Before(e.StartDate)
	}
	return false
}

// checkEditable refuses changes to an election or its candidates once voting started: the
// edge would otherwise count votes for a ballot that changed under the viewers.
func (e *Election) checkEditable(now time.Time) error {
	if e.Status == contract.StatusCancelled {
		return invalid("election %s is cancelled and can no longer be changed", e.ID)
	}
	if e.votingStarted(now) {
		return invalid("voting in election %s started at %s: the election and its candidates can no longer be changed",
			e.ID, e.StartDate.Format(time.RFC3339))
	}
	return nil
}

// settle moves a DRAFT or a not yet started SCHEDULED election to the status its content
// gives: SCHEDULED with enough candidates and a future start, DRAFT otherwise.
func (e *Election) settle(now time.Time) {
	if e.Status != contract.StatusDraft && e.Status != contract.StatusScheduled {
		return
	}
	if len(e.Candidates) >= MinCandidates && e.StartDate.After(now) {
		e.Status = contract.StatusScheduled
	} else {
		e.Status = contract.StatusDraft
	}
}

// apply merges f into e and checks the result. Dates that change must lie in the future.
func (e *Election) apply(f ElectionFields, now time.Time) error {
	if f.Title != nil {
		e.Title = *f.Title
	}
	if f.Description != nil {
		e.Description = *f.Description
	}
	if f.StartDate != nil {
		start := dbTime(*f.StartDate)
		if !start.Equal(e.StartDate) && !start.After(now) {
			return invalid("startDate must be in the future; PATCH status ACTIVE opens voting now")
		}
		e.StartDate = start
	}
	if f.EndDate != nil {
		end := dbTime(*f.EndDate)
		if !end.Equal(e.EndDate) && !end.After(now) {
			return invalid("endDate must be in the future")
		}
		e.EndDate = end
	}
	if n := utf8.RuneCountInString(e.Title); n < titleMin || n > titleMax || strings.TrimSpace(e.Title) == "" {
		return invalid("title must be %d to %d characters", titleMin, titleMax)
	}
	if utf8.RuneCountInString(e.Description) > descriptionMax {
		return invalid("description must be at most %d characters", descriptionMax)
	}
	if !e.EndDate.After(e.StartDate) {
		return invalid("endDate must be after startDate")
	}
	return nil
}

// apply merges f into c and checks the result.
func (c *Candidate) apply(f CandidateFields) error {
	if f.Name != nil {
		c.Name = *f.Name
	}
	if f.Party != nil {
		c.Party = *f.Party
	}
	if f.PhotoURL != nil {
		c.PhotoURL = *f.PhotoURL
	}
	if n := utf8.RuneCountInString(c.Name); n < nameMin || n > nameMax || strings.TrimSpace(c.Name) == "" {
		return invalid("name must be %d to %d characters", nameMin, nameMax)
	}
	if utf8.RuneCountInString(c.Party) > partyMax {
		return invalid("party must be at most %d characters", partyMax)
	}
	if c.PhotoURL != "" {
		u, err := url.Parse(c.PhotoURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(c.PhotoURL) > photoURLMax {
			return invalid("photoUrl must be an absolute http(s) URL of at most %d characters", photoURLMax)
		}
	}
	return nil
}

// dbTime is t as PostgreSQL stores it (microseconds, UTC), so what we return equals what we
// read back later.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
