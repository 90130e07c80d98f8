package results

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
)

// ElectionStatistics is the contract's ElectionStatistics. VotesPerHour and RegionalBreakdown
// are absent unless asked for, and an empty array when asked for but nothing was counted yet
// (omitzero tells those apart, omitempty would not).
type ElectionStatistics struct {
	ElectionID          string                    `json:"electionId"`
	TotalVotes          int64                     `json:"totalVotes"`
	TotalEligibleVoters int64                     `json:"totalEligibleVoters"`
	TurnoutPercentage   float64                   `json:"turnoutPercentage"`
	CandidateStats      []contract.CandidateTotal `json:"candidateStats"`
	VotesPerHour        []HourCount               `json:"votesPerHour,omitzero"`
	RegionalBreakdown   []RegionCount             `json:"regionalBreakdown,omitzero"`
	PeakVotingTime      *time.Time                `json:"peakVotingTime,omitempty"`
	// AverageVotingTime is the mean number of seconds from the election's start (startDate:
	// when voting opened) to a vote's acceptance at the edge: how fast viewers answer the
	// call to vote. Absent before the first vote.
	AverageVotingTime *float64  `json:"averageVotingTime,omitempty"`
	GeneratedAt       time.Time `json:"generatedAt"`
}

// HourCount is one entry of votesPerHour.
type HourCount struct {
	Hour  time.Time `json:"hour"`
	Count int64     `json:"count"`
}

// RegionCount is one entry of regionalBreakdown: the region's votes, and every candidate of
// the election with its votes there (0 included, so each region lists the same candidates), in
// the order of candidateStats.
type RegionCount struct {
	Region     string            `json:"region"`
	TotalVotes int64             `json:"totalVotes"`
	Candidates []RegionCandidate `json:"candidates"`
}

// RegionCandidate is one candidate's votes in one region.
type RegionCandidate struct {
	CandidateID string `json:"candidateId"`
	Votes       int64  `json:"votes"`
}

// RegionVotes is one (region, candidate) row of vote_stats, summed over the hours.
type RegionVotes struct {
	Region      string
	CandidateID string
	Votes       int64
}

// unknownRegion labels votes whose edge did not stamp a region.
const unknownRegion = "UNKNOWN"

// StatsData is what the statistics endpoint reads, all from one consistent database snapshot.
type StatsData struct {
	Counts         ElectionCounts
	EligibleVoters int64
	Hourly         []HourCount   // every hour with votes, ascending
	Regional       []RegionVotes // unordered; only when asked for
	// SinceOpenMs is the sum over every vote of the milliseconds from the election's start to
	// its acceptance (vote_stats.since_open_ms), StatsVotes the number of votes it adds up.
	SinceOpenMs int64
	StatsVotes  int64
}

// StatisticsStore reads StatsData.
type StatisticsStore interface {
	Statistics(ctx context.Context, electionID string, withRegional bool) (StatsData, error)
}

// Statistics implements StatisticsStore. It runs in one read-only REPEATABLE READ transaction so
// that totals, hours and regions add up for an auditor even while votes keep arriving. Only
// maintained tables are read (vote_counts, vote_stats), never votes.
func (s PGStore) Statistics(ctx context.Context, electionID string, withRegional bool) (StatsData, error) {
	var d StatsData
	err := pgx.BeginTxFunc(ctx, s.Pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT eligible_voters FROM elections WHERE id = $1`, electionID).Scan(&d.EligibleVoters)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("query election: %w", err)
		}
		m, err := electionsCounts(ctx, tx, []string{electionID})
		if err != nil {
			return err
		}
		d.Counts = m[electionID]
		rows, err := tx.Query(ctx, `SELECT hour, sum(votes)::bigint, sum(since_open_ms)::bigint FROM vote_stats
			WHERE election_id = $1 GROUP BY hour HAVING sum(votes) > 0 ORDER BY hour`, electionID)
		if err != nil {
			return fmt.Errorf("query hourly stats: %w", err)
		}
		d.Hourly, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (HourCount, error) {
			var (
				h  HourCount
				ms int64
			)
			err := r.Scan(&h.Hour, &h.Count, &ms)
			h.Hour = h.Hour.UTC()
			d.SinceOpenMs += ms
			d.StatsVotes += h.Count
			return h, err
		})
		if err != nil {
			return fmt.Errorf("scan hourly stats: %w", err)
		}
		if !withRegional {
			return nil
		}
		rows, err = tx.Query(ctx, `SELECT region, candidate_id::text, sum(votes)::bigint FROM vote_stats
			WHERE election_id = $1 GROUP BY region, candidate_id HAVING sum(votes) > 0`, electionID)
		if err != nil {
			return fmt.Errorf("query regional stats: %w", err)
		}
		d.Regional, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (RegionVotes, error) {
			var rv RegionVotes
			err := r.Scan(&rv.Region, &rv.CandidateID, &rv.Votes)
			return rv, err
		})
		if err != nil {
			return fmt.Errorf("scan regional stats: %w", err)
		}
		return nil
	})
	return d, err
}

// buildStatistics turns StatsData into the contract body.
//   - turnout is totalVotes / eligible_voters, 0 while the electorate is unknown (0); it is not
//     capped at 100, because an auditor must see an electorate set too low.
//   - peakVotingTime is the hour with the most votes; on a tie the earliest, so the answer is
//     stable; absent before the first vote.
//   - averageVotingTime in seconds, rounded to 2 decimals; absent before the first vote.
//   - regions by votes descending, then name; in each, the candidates in candidateStats order.
func buildStatistics(d StatsData, hourly, regional bool, now time.Time) ElectionStatistics {
	res := buildResults(d.Counts, true, now)
	out := ElectionStatistics{
		ElectionID:          d.Counts.ElectionID,
		TotalVotes:          res.TotalVotes,
		TotalEligibleVoters: d.EligibleVoters,
		TurnoutPercentage:   percentage(res.TotalVotes, d.EligibleVoters),
		CandidateStats:      res.Totals,
		GeneratedAt:         now.UTC(),
	}
	var peak *HourCount
	for i := range d.Hourly {
		if peak == nil || d.Hourly[i].Count > peak.Count {
			peak = &d.Hourly[i]
		}
	}
	if peak != nil {
		t := peak.Hour
		out.PeakVotingTime = &t
	}
	if d.StatsVotes > 0 {
		avg := math.Round(float64(d.SinceOpenMs)/float64(d.StatsVotes)/10) / 100
		out.AverageVotingTime = &avg
	}
	if hourly {
		out.VotesPerHour = append([]HourCount{}, d.Hourly...)
	}
	if regional {
		out.RegionalBreakdown = regionalBreakdown(d.Regional, res.Totals)
	}
	return out
}

// regionalBreakdown sums vote_stats rows per region; "" (votes whose edge stamped no region)
// and an explicit "UNKNOWN" are the same bucket on a report.
func regionalBreakdown(rows []RegionVotes, totals []contract.CandidateTotal) []RegionCount {
	byRegion := map[string]map[string]int64{}
	for _, r := range rows {
		if r.Region == "" {
			r.Region = unknownRegion
		}
		if byRegion[r.Region] == nil {
			byRegion[r.Region] = map[string]int64{}
		}
		byRegion[r.Region][r.CandidateID] += r.Votes
	}
	out := make([]RegionCount, 0, len(byRegion))
	for region, votes := range byRegion {
		rc := RegionCount{Region: region, Candidates: make([]RegionCandidate, 0, len(totals))}
		for _, t := range totals {
			rc.Candidates = append(rc.Candidates, RegionCandidate{CandidateID: t.CandidateID, Votes: votes[t.CandidateID]})
		}
		for _, n := range votes {
			rc.TotalVotes += n
		}
		out = append(out, rc)
	}
	slices.SortFunc(out, func(a, b RegionCount) int {
		return cmp.Or(cmp.Compare(b.TotalVotes, a.TotalVotes), strings.Compare(a.Region, b.Region))
	})
	return out
}
