package contract

// Election statuses, as the contract spells them and elections.status stores them.
//
//	DRAFT ──(≥ 2 candidates and a future startDate)──▶ SCHEDULED   automatic, both ways
//	SCHEDULED ──startDate or an admin's open──▶ ACTIVE ──endDate or an admin's close──▶ CLOSED
//	any ──DELETE──▶ CANCELLED
const (
	StatusDraft     = "DRAFT"
	StatusScheduled = "SCHEDULED"
	StatusActive    = "ACTIVE"
	StatusClosed    = "CLOSED"
	StatusCancelled = "CANCELLED"
)

// Statuses lists every election status.
var Statuses = []string{StatusDraft, StatusScheduled, StatusActive, StatusClosed, StatusCancelled}

// Permissions of access tokens (Auth0 RBAC). The contract's ADMIN role holds PermAdmin, its
// AUDITOR role PermReadStatistics.
const (
	PermAdmin          = "admin:elections"
	PermReadStatistics = "read:statistics"
)

// API paths the edge, the control plane and the workers route on.
const (
	PathVotes          = "/api/v1/votes"
	PathVoteChallenge  = "/api/v1/votes/challenge"
	PathVoteStatus     = "/api/v1/votes/status/" // + {electionId}/{userId}
	PathResults        = "/api/v1/results/"      // + {electionId}, live/…, statistics/…, stream/…, page/…
	PathAdmin          = "/api/v1/admin/"
	PathInternalStatus = "/internal/v1/vote-status/" // the results worker's status service, behind the edge
)
