package contract

// PostgreSQL LISTEN/NOTIFY channels between the programs.
const (
	// ChannelVoteCounts carries CountsChanged: the processor announces, in the transaction that
	// changed them, which vote_counts rows changed and by how much; the results worker applies
	// the totals to the counts it holds, without a query.
	ChannelVoteCounts = "vote_counts"
	// ChannelElectionsChanged carries an election id whenever an election or the edge settings
	// change (admin API, scheduler, seeding); the control plane and the results worker listen.
	ChannelElectionsChanged = "elections_changed"
)

// CountsChanged is the JSON payload sent on ChannelVoteCounts. One committed batch sends one payload,
// or several if its deltas would not fit PostgreSQL's 8000-byte NOTIFY limit; every payload is
// delivered only if and when its transaction commits, in commit order.
//
// How to consume it: LISTEN is not durable (a listener that reconnects has missed everything in
// between), so a consumer LISTENs first, then reads vote_counts, then applies payloads. Because a
// count only ever grows, CountDelta.Votes (the total after the commit) can be applied as
// max(current, Votes): idempotent, order-insensitive and correct even for payloads that overlap
// the snapshot. Delta is the increase made by this transaction, for consumers that stream
// increments (e.g. "+12 in the last second"). The results worker consumes it so, and re-reads
// vote_counts only as a safety net (a periodic poll, after reconnecting, and for a payload it
// cannot apply: one without deltas, or an election listed without its deltas).
type CountsChanged struct {
	// ElectionIDs lists the elections whose counts changed (sorted, each once), every one with
	// its deltas; for consumers that only need "refresh these".
	ElectionIDs []string `json:"electionIds"`
	// Deltas holds one entry per changed (election, candidate), sorted by election then candidate.
	Deltas []CountDelta `json:"deltas"`
}

// CountDelta is one candidate's change in one committed batch.
type CountDelta struct {
	ElectionID  string `json:"electionId"`
	CandidateID string `json:"candidateId"`
	// Delta is the number of votes this transaction added (always > 0).
	Delta int64 `json:"delta"`
	// Votes is vote_counts.votes for the candidate right after this transaction.
	Votes int64 `json:"votes"`
}
