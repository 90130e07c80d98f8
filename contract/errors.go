// Package contract holds the wire types of the public API (../shared/contracts) and of the
// vote queue, so the edge filter, the workers and the tests agree on one definition.
package contract

import "net/http"

// ErrorResponse is the contract's error body for every non-2xx answer.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	TraceID string `json:"traceId,omitempty"`
}

// Error codes. Each maps to exactly one HTTP status through Status.
const (
	CodeInvalidRequest     = "INVALID_REQUEST"
	CodeInvalidElectionID  = "INVALID_ELECTION_ID"
	CodeInvalidCandidateID = "INVALID_CANDIDATE_ID"
	CodeInvalidCaptcha     = "INVALID_CAPTCHA_TOKEN"
	CodeUnsupportedMedia   = "UNSUPPORTED_MEDIA_TYPE"
	CodePayloadTooLarge    = "PAYLOAD_TOO_LARGE"
	CodeUnauthorized       = "UNAUTHORIZED"
	CodeForbidden          = "FORBIDDEN"
	CodeElectionNotFound   = "ELECTION_NOT_FOUND"
	CodeCandidateNotFound  = "CANDIDATE_NOT_FOUND"
	CodeElectionNotOpen    = "ELECTION_NOT_OPEN"
	CodeDuplicateVote      = "DUPLICATE_VOTE"
	CodeRateLimited        = "RATE_LIMITED"
	CodeUnavailable        = "SERVICE_UNAVAILABLE"
	CodeInternal           = "INTERNAL_ERROR"
	CodeNotFound           = "NOT_FOUND"
	CodeMethodNotAllowed   = "METHOD_NOT_ALLOWED"
	CodeCaptchaFailed      = "CAPTCHA_FAILED"
	CodeInvalidUserID      = "INVALID_USER_ID"
)

var statusByCode = map[string]int{
	CodeInvalidRequest:     http.StatusBadRequest,
	CodeInvalidElectionID:  http.StatusBadRequest,
	CodeInvalidCandidateID: http.StatusBadRequest,
	CodeInvalidCaptcha:     http.StatusBadRequest,
	CodeUnsupportedMedia:   http.StatusUnsupportedMediaType,
	CodePayloadTooLarge:    http.StatusRequestEntityTooLarge,
	CodeUnauthorized:       http.StatusUnauthorized,
	CodeForbidden:          http.StatusForbidden,
	CodeElectionNotFound:   http.StatusNotFound,
	CodeCandidateNotFound:  http.StatusUnprocessableEntity,
	CodeElectionNotOpen:    http.StatusConflict,
	CodeDuplicateVote:      http.StatusConflict,
	CodeRateLimited:        http.StatusTooManyRequests,
	CodeUnavailable:        http.StatusServiceUnavailable,
	CodeInternal:           http.StatusInternalServerError,
	CodeNotFound:           http.StatusNotFound,
	CodeMethodNotAllowed:   http.StatusMethodNotAllowed,
	CodeCaptchaFailed:      http.StatusForbidden,
	CodeInvalidUserID:      http.StatusBadRequest,
}

// Status is the HTTP status for an error code; unknown codes are internal errors.
func Status(code string) int {
	if s, ok := statusByCode[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}
