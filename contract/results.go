package contract

import "time"

// CandidateTotal is one row of ElectionResults.totals.
type CandidateTotal struct {
	CandidateID string   `json:"candidateId"`
	Name        string   `json:"name"`
	Party       string   `json:"party,omitempty"`
	Votes       int64    `json:"votes"`
	Percentage  *float64 `json:"percentage,omitempty"`
}

// ElectionResults is the answer of GET /api/v1/results/{electionId}.
type ElectionResults struct {
	ElectionID    string           `json:"electionId"`
	ElectionTitle string           `json:"electionTitle"`
	Status        string           `json:"status"`
	Totals        []CandidateTotal `json:"totals"`
	TotalVotes    int64            `json:"totalVotes"`
	GeneratedAt   time.Time        `json:"generatedAt"`
}

// LiveCount is the answer of GET /api/v1/results/live/{electionId}.
type LiveCount struct {
	ElectionID   string    `json:"electionId"`
	CurrentVotes int64     `json:"currentVotes"`
	LastUpdated  time.Time `json:"lastUpdated"`
}
