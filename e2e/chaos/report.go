package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Result is one scenario's answers checked against the stores.
type Result struct {
	Scenario string
	Viewers  int

	OK     int // viewers whose answer was 200
	Dup409 int // viewers whose answer was 409 DUPLICATE_VOTE
	Rows   int // votes rows of the scenario's election

	Lost200        int // 200s whose voteId is not a votes row
	Other200       int // 200s whose viewer has a row under another vote id or candidate
	NoRow409       int // 409s of viewers with no row
	FirstTry409    int // 409s answered to a viewer's first attempt: nothing of theirs came before
	Revoted        int // viewers that sent their vote again after a 200
	Readmitted     int // of those, answered 200 again under another vote id: admitted twice
	Replayed       int // of those, answered 200 again with the same vote id (allowed: one vote)
	DupRows        int // rows beyond the first of one (election, viewer)
	DupVoteIDs     int // 200s repeating a voteId answered to another viewer
	CountMismatch  int // candidates whose vote_counts differs from their rows
	DLQ            int // messages the scenario added to votes-dlq (-1: unknown)
	GaveUp         int // viewer votes with no final answer within the give-up limit
	Refused        int // final answers other than 200 and 409 DUPLICATE_VOTE
	RowsWithout200 int // rows of viewers that never saw their 200 (allowed)

	Attempts, Unavailable, ConnErrors int
	Bare503                           int           // 503s without a Retry-After
	P50, P99, Max                     time.Duration // first attempt to final answer

	Counts    []CandidateCount
	Faults    []FaultEvent
	LoadTime  time.Duration
	Drained   bool
	DrainTime time.Duration
	Err       error // the scenario could not be run or checked
	refusals  []string
	problems  []viewerRecord
}

// CandidateCount is one candidate's vote_counts against its rows.
type CandidateCount struct {
	Candidate     string
	Counted, Rows int64
}

// Failures are the broken promises of a scenario; none means it passed.
func (r Result) Failures() []string {
	if r.Err != nil {
		return []string{"not run: " + r.Err.Error()}
	}
	var f []string
	add := func(n int, what string) {
		if n > 0 {
			f = append(f, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.Lost200, "200s whose vote is not stored")
	add(r.Other200, "200s whose viewer's row is another vote")
	add(r.NoRow409, "409s of viewers with no row")
	add(r.Readmitted, "viewers admitted again after their 200")
	add(r.DupRows, "duplicate rows")
	add(r.DupVoteIDs, "voteIds answered to two viewers")
	add(r.CountMismatch, "candidates whose vote_counts differ from their rows")
	add(r.GaveUp, "votes with no final answer")
	add(r.Bare503, "503s without Retry-After")
	if r.Refused > 0 {
		f = append(f, fmt.Sprintf("%d valid votes refused (%s)", r.Refused, summarize(r.refusals)))
	}
	if !r.Drained {
		f = append(f, fmt.Sprintf("queue not drained after %s", r.DrainTime.Round(time.Second)))
	}
	for _, e := range r.Faults {
		if e.Err != nil {
			f = append(f, fmt.Sprintf("%s: %v", e.Fault, e.Err))
		}
	}
	return f
}

// Verdict is PASS, FAIL, or ERROR when the scenario could not be run.
func (r Result) Verdict() string {
	switch {
	case r.Err != nil:
		return "ERROR"
	case len(r.Failures()) > 0:
		return "FAIL"
	}
	return "PASS"
}

// Passed says every result passed.
func Passed(results []Result) bool {
	return !slices.ContainsFunc(results, func(r Result) bool { return r.Verdict() != "PASS" })
}

// summarize counts equal strings: "404 ELECTION_NOT_FOUND ×3, 401 UNAUTHORIZED ×1".
func summarize(list []string) string {
	n := map[string]int{}
	for _, s := range list {
		n[s]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return n[b] - n[a] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, n[k]))
	}
	return strings.Join(parts, ", ")
}

// Table is one Markdown row per scenario. The pass criteria are the columns from "lost 200"
// to "refused"; the rest describes the run.
func Table(results []Result) string {
	var b strings.Builder
	b.WriteString("| scenario | viewers | 200 | 409 | rows | lost 200 | 200 ≠ row | 409 no row | re-admitted | dup rows | dup voteId | counts ≠ rows | gave up | refused | DLQ | rows w/o 200 | attempts | 503s | conn errors | answer p50 / p99 / max s | load s | verdict |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(&b, "| %s | %d |%s ERROR |\n", r.Scenario, r.Viewers, strings.Repeat(" |", 19))
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %d | %d | %d | %d | %s / %s / %s | %.1f | %s |\n",
			r.Scenario, r.Viewers, r.OK, r.Dup409, r.Rows, r.Lost200, r.Other200, r.NoRow409, r.Readmitted,
			r.DupRows, r.DupVoteIDs, r.CountMismatch, r.GaveUp, r.Refused, dlq(r.DLQ), r.RowsWithout200,
			r.Attempts, r.Unavailable, r.ConnErrors, secs(r.P50), secs(r.P99), secs(r.Max), r.LoadTime.Seconds(), r.Verdict())
	}
	return b.String()
}

// Notes are, per scenario, when each fault struck and how long the component took to come
// back, then what failed.
func Notes(results []Result) string {
	var b strings.Builder
	for _, r := range results {
		fmt.Fprintf(&b, "- **%s** (%s):", r.Scenario, r.Verdict())
		if r.Err != nil {
			fmt.Fprintf(&b, " %v\n", r.Err)
			continue
		}
		for i, e := range r.Faults {
			if i > 0 {
				b.WriteString(";")
			}
			fmt.Fprintf(&b, " %s at %.0f %% answered (t=%.1f s, %d in flight)", e.Fault, 100*e.AtShare, e.At.Seconds(), e.InFlight)
			if e.Kind == "kill" {
				fmt.Fprintf(&b, ", healthy %.1f s after restart", e.Recovery.Seconds())
			}
			if e.Kind == "failover" {
				fmt.Fprintf(&b, ", replica serving %.1f s after the kill, %d 503s over %.1f s meanwhile, old primary back as a replica %.1f s after its restart",
					e.Failover.Seconds(), e.Unavailable503, e.Unavailable.Seconds(), e.Recovery.Seconds())
			}
			if !e.DuringLoad {
				b.WriteString(", back only after the load ended")
			}
			if e.Err != nil {
				fmt.Fprintf(&b, ", failed: %v", e.Err)
			}
		}
		if len(r.Faults) == 0 {
			b.WriteString(" no fault")
		}
		fmt.Fprintf(&b, ". Revoted %d, drained in %.0f s.", r.Revoted, r.DrainTime.Seconds())
		if r.Replayed > 0 {
			fmt.Fprintf(&b, " %d revotes answered 200 with the first vote's id (an adopted reservation: the same vote, not a second).", r.Replayed)
		}
		if r.FirstTry409 > 0 {
			fmt.Fprintf(&b, " %d of the 409s answered a viewer's first attempt.", r.FirstTry409)
		}
		if r.CountMismatch > 0 {
			var c []string
			for _, x := range r.Counts {
				c = append(c, fmt.Sprintf("%s %d counted / %d rows", x.Candidate, x.Counted, x.Rows))
			}
			fmt.Fprintf(&b, " Counts: %s.", strings.Join(c, ", "))
		}
		if f := r.Failures(); len(f) > 0 {
			fmt.Fprintf(&b, " Failed: %s.", strings.Join(f, "; "))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// WriteProblems writes one JSON line per viewer with a problem (and per row without a 200) to
// dir/<scenario>.jsonl: each attempt's status, the answer, the rows.
func WriteProblems(dir string, r Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, r.Scenario+".jsonl"))
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetEscapeHTML(false)
	for _, p := range r.problems {
		if err := enc.Encode(p); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func dlq(n int) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}
