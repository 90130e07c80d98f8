package captcha

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// SiteverifyRequest is the form body every siteverify API (reCAPTCHA, Turnstile, hCaptcha)
// accepts: secret, response and the viewer's IP.
func SiteverifyRequest(secret, token, remoteIP string) []byte {
	v := url.Values{"secret": {secret}, "response": {token}}
	if remoteIP != "" {
		v.Set("remoteip", remoteIP)
	}
	return []byte(v.Encode())
}

type siteverifyAnswer struct {
	Success    bool     `json:"success"`
	Score      *float64 `json:"score"`
	Action     string   `json:"action"`
	ErrorCodes []string `json:"error-codes"`
}

// ErrUnavailable means the siteverify service could not give an answer.
var ErrUnavailable = errors.New("captcha service unavailable")

// CheckSiteverify reads a siteverify answer. minScore applies to reCAPTCHA v3 style scores;
// answers without a score (Turnstile, hCaptcha, reCAPTCHA v2) pass on success alone.
func CheckSiteverify(status int, body []byte, minScore float64) error {
	// A provider that answers badly is an outage (503 to the viewer), not a refused captcha.
	if status != 200 {
		return fmt.Errorf("%w: siteverify answered HTTP %d", ErrUnavailable, status)
	}
	var a siteverifyAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("%w: unreadable siteverify answer: %v", ErrUnavailable, err)
	}
	if !a.Success {
		return fmt.Errorf("%w: %s", ErrFailed, strings.Join(a.ErrorCodes, ","))
	}
	if a.Score != nil && *a.Score < minScore {
		return fmt.Errorf("%w: score %.2f below %.2f", ErrFailed, *a.Score, minScore)
	}
	return nil
}
