package votefilter

import "github.com/tvvote/voting/contract"

// Messages of the lines the edge writes about a vote's decision: one line per decision, with
// the correlation id (requestId) and the election (electionId), so a vote can be followed from
// the edge's log through the processor's by its id.
const (
	EventVoteAccepted     = "vote accepted"
	EventVoteDuplicate    = "duplicate vote"
	EventCaptchaFailed    = "captcha failed"
	EventElectionNotFound = "election not found"
)

// logDecision writes the line of a decided vote; decisions that are not one of the events
// above (limits, bad input) are left to the stats.
func (a *Admitter) logDecision(event, requestID, electionID string, attrs ...any) {
	a.Log.Info(event, append([]any{"requestId", requestID, "electionId", electionID}, attrs...)...)
}

// logRejection writes the line of a rejected vote when its code is one of the events.
func (a *Admitter) logRejection(rej *Rejection, requestID, electionID string) {
	switch rej.Code {
	case contract.CodeElectionNotFound:
		a.logDecision(EventElectionNotFound, requestID, electionID)
	case contract.CodeCaptchaFailed:
		a.logDecision(EventCaptchaFailed, requestID, electionID, "reason", rej.Reason)
	case contract.CodeDuplicateVote:
		a.logDecision(EventVoteDuplicate, requestID, electionID, "reason", rej.Reason)
	}
}
