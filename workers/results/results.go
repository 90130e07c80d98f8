// Package results is the results worker (contract: shared/contracts/results-service.yaml): final
// results and live counts, the WebSocket stream of vote updates, statistics for admins and
// auditors, and the on-air live results page. Counts come from the vote_counts table that the
// processor maintains; the Hub holds them in memory, moved by the count deltas of the
// processor's notifications (with a 1 s re-read as safety net), and fans changes out to every
// stream of an election.
package results

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tvvote/voting/contract"
)

// resultsRefusal says how the public results endpoints answer for an election in status: ""
// when they serve its results, else the error code they answer instead. The contract's
// ElectionResults.status is ACTIVE or CLOSED only, so results exist from the moment voting
// opens:
//   - ACTIVE and CLOSED: served as they are.
//   - SCHEDULED: ELECTION_NOT_OPEN (409), as POST /votes answers for it. The election is
//     announced, so its existence is no secret, but nothing is counted before it opens, and
//     calling it ACTIVE or CLOSED would state something false on air.
//   - DRAFT: ELECTION_NOT_FOUND (404). A draft is unpublished; its title and candidates must not
//     leak through a public, cacheable endpoint.
//   - CANCELLED: ELECTION_NOT_FOUND (404). Cancelling is the contract's DELETE (a soft delete),
//     and an annulled vote has no result to show. Admins and auditors keep its statistics.
func resultsRefusal(status string) string {
	switch status {
	case contract.StatusActive, contract.StatusClosed:
		return ""
	case contract.StatusScheduled:
		return contract.CodeElectionNotOpen
	default:
		return contract.CodeElectionNotFound
	}
}

// streamable decides which elections the WebSocket stream serves: those with results, and
// scheduled ones, so that the on-air screen can be up before voting opens and go live with
// the STATUS_CHANGE it receives then (the stream message's newStatus is not limited to
// ACTIVE and CLOSED).
func streamable(status string) bool {
	return resultsRefusal(status) == "" || status == contract.StatusScheduled
}

// cacheControl is the Cache-Control of a results answer: counts of a running election change
// every second, a closed one's never again.
func cacheControl(status string) string {
	if status == contract.StatusClosed {
		return "public, max-age=300"
	}
	return "public, max-age=5"
}

// liveCacheControl is the live count's Cache-Control (from the contract's example).
const liveCacheControl = "no-cache, no-store, must-revalidate"

// percentage is votes/total as a percentage rounded half away from zero to 2 decimals; 0 when
// nothing was counted yet rather than NaN.
func percentage(votes, total int64) float64 {
	if total <= 0 {
		return 0
	}
	return math.Round(float64(votes)*10000/float64(total)) / 100
}

// buildResults turns stored counts into the contract body: candidates by votes descending,
// then name, then id (so equal counts list in a stable order across requests and caches).
func buildResults(ec ElectionCounts, withPercentages bool, now time.Time) contract.ElectionResults {
	cands := slices.Clone(ec.Candidates)
	slices.SortFunc(cands, func(a, b CandidateCount) int {
		return cmp.Or(cmp.Compare(b.Votes, a.Votes), strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
	})
	var total int64
	for _, c := range cands {
		total += c.Votes
	}
	out := contract.ElectionResults{
		ElectionID:    ec.ElectionID,
		ElectionTitle: ec.Title,
		Status:        ec.Status,
		Totals:        make([]contract.CandidateTotal, 0, len(cands)),
		TotalVotes:    total,
		GeneratedAt:   now.UTC(),
	}
	for _, c := range cands {
		t := contract.CandidateTotal{CandidateID: c.ID, Name: c.Name, Party: c.Party, Votes: c.Votes}
		if withPercentages {
			p := percentage(c.Votes, total)
			t.Percentage = &p
		}
		out.Totals = append(out.Totals, t)
	}
	return out
}

// lastChange is the newest of the election row's and its counts' updated_at.
func lastChange(ec ElectionCounts) time.Time {
	last := ec.UpdatedAt
	for _, c := range ec.Candidates {
		if c.UpdatedAt.After(last) {
			last = c.UpdatedAt
		}
	}
	return last
}

// resultsETag versions one representation of an election's results. Total votes and the last
// change time move whenever a count or the election (status, title) changes; the percentages
// flag is part of it because it changes the body.
func resultsETag(ec ElectionCounts, withPercentages bool) string {
	var total int64
	for _, c := range ec.Candidates {
		total += c.Votes
	}
	tag := fmt.Sprintf("%s-v%d.%d", ec.ElectionID, total, lastChange(ec).UnixMicro())
	if !withPercentages {
		tag += "-np"
	}
	return `"` + tag + `"`
}

// etagMatches implements If-None-Match (RFC 9110 §13.1.2): a list of tags or "*", compared
// weakly (a W/ prefix is ignored).
func etagMatches(ifNoneMatch, etag string) bool {
	for _, t := range strings.Split(ifNoneMatch, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

// liveCount turns a stored total into the contract body; lastUpdated falls back to the
// election's own updated_at before the first vote is counted.
func liveCount(lt LiveTotal) contract.LiveCount {
	last := lt.CountsUpdatedAt
	if last.IsZero() {
		last = lt.ElectionUpdatedAt
	}
	return contract.LiveCount{ElectionID: lt.ElectionID, CurrentVotes: lt.Votes, LastUpdated: last.UTC()}
}
