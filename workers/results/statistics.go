package results

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
	GeneratedAt         time.Time                 `json:"generatedAt"`
}

// HourCount is one entry of votesPerHour.
type HourCount struct {
	Hour  time.Time `json:"hour"`
	Count int64     `json:"count"`
}

// RegionCount is one entry of regionalBreakdown. The contract also describes per-candidate
// counts per region; vote_stats does not record the candidate, and computing them would scan
// the votes table, so Candidates stays absent until vote_stats gains a candidate column.
type RegionCount struct {
	Region     string `json:"region"`
	TotalVotes int64  `json:"totalVotes"`
}

// unknownRegion labels votes whose edge did not stamp a region.
const unknownRegion = "UNKNOWN"

// StatsData is what the statistics endpoint reads, all from one consistent database snapshot.
type StatsData struct {
	Counts         ElectionCounts
	EligibleVoters int64
	Hourly         []HourCount   // every hour with votes, ascending
	Regional       []RegionCount // unordered
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
		rows, err := tx.Query(ctx, `SELECT hour, sum(votes)::bigint FROM vote_stats WHERE election_id = $1
			GROUP BY hour HAVING sum(votes) > 0 ORDER BY hour`, electionID)
		if err != nil {
			return fmt.Errorf("query hourly stats: %w", err)
		}
		d.Hourly, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (HourCount, error) {
			var h HourCount
			err := r.Scan(&h.Hour, &h.Count)
			h.Hour = h.Hour.UTC()
			return h, err
		})
		if err != nil {
			return fmt.Errorf("scan hourly stats: %w", err)
		}
		if !withRegional {
			return nil
		}
		rows, err = tx.Query(ctx, `SELECT region, sum(votes)::bigint FROM vote_stats WHERE election_id = $1
			GROUP BY region HAVING sum(votes) > 0`, electionID)
		if err != nil {
			return fmt.Errorf("query regional stats: %w", err)
		}
		d.Regional, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (RegionCount, error) {
			var rc RegionCount
			err := r.Scan(&rc.Region, &rc.TotalVotes)
			return rc, err
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
//   - regions by votes descending, then name.
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
	if hourly {
		out.VotesPerHour = append([]HourCount{}, d.Hourly...)
	}
	if regional {
		out.RegionalBreakdown = []RegionCount{}
		for _, r := range d.Regional {
			if r.Region == "" {
				r.Region = unknownRegion
			}
			// Merge: "" and an explicit "UNKNOWN" are the same bucket on a report.
			if i := slices.IndexFunc(out.RegionalBreakdown, func(x RegionCount) bool { return x.Region == r.Region }); i >= 0 {
				out.RegionalBreakdown[i].TotalVotes += r.TotalVotes
				continue
			}
			out.RegionalBreakdown = append(out.RegionalBreakdown, r)
		}
		slices.SortFunc(out.RegionalBreakdown, func(a, b RegionCount) int {
			return cmp.Or(cmp.Compare(b.TotalVotes, a.TotalVotes), strings.Compare(a.Region, b.Region))
		})
	}
	return out
}
