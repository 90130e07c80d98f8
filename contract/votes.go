package contract

import "time"

// VoteRequest is the body of POST /api/v1/votes.
type VoteRequest struct {
	ElectionID   string `json:"electionId"`
	CandidateID  string `json:"candidateId"`
	CaptchaToken string `json:"captchaToken"`
}

// CaptchaTokenMinLength is VoteRequest.captchaToken's minLength in the contract.
const CaptchaTokenMinLength = 20

// VoteResult is the 200 answer of POST /api/v1/votes.
type VoteResult struct {
	VoteID     string    `json:"voteId"`
	Status     string    `json:"status"`
	AcceptedAt time.Time `json:"acceptedAt"`
}

// VoteStatusAccepted is the only VoteResult.status the contract allows.
const VoteStatusAccepted = "accepted"

// QueuedVote is the SQS message body for one admitted vote. The edge writes it, the processor
// reads it; fields only ever get added.
type QueuedVote struct {
	VoteID      string `json:"voteId"`
	ElectionID  string `json:"electionId"`
	CandidateID string `json:"candidateId"`
	UserID      string `json:"userId"`
	// Region is the region whose edge served the viewer.
	Region string `json:"region"`
	// HomeRegion is the region whose admission store and queue took the vote: the viewer's one
	// region of a multi-region fleet, whichever edge they reached. Empty: Region.
	HomeRegion string    `json:"homeRegion,omitempty"`
	RequestID  string    `json:"requestId"`
	AcceptedAt time.Time `json:"acceptedAt"`
	// TraceParent is the W3C trace context of the edge's span for the request; it travels as
	// the AttrTraceParent message attribute, not in the body.
	TraceParent string `json:"-"`
}

// SQS message attribute names carried with every QueuedVote.
const (
	AttrRequestID = "x-request-id"
	AttrRegion    = "region"
	// AttrTraceParent is the W3C traceparent of the edge span that admitted the vote, when the
	// edge traces; the processor links its batch span to it.
	AttrTraceParent = "traceparent"
)
