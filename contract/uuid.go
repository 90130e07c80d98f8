package contract

import "github.com/google/uuid"

// CanonicalUUID accepts only the contract's `format: uuid` spelling, the 36-character
// hyphenated form (uuid.Parse alone would also take urn: and braced forms), and returns it
// lower-cased, so equal ids compare equal as strings.
func CanonicalUUID(s string) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// IsUUID reports whether s is a uuid in the contract's spelling.
func IsUUID(s string) bool {
	_, ok := CanonicalUUID(s)
	return ok
}

// TraceID is the ErrorResponse.traceId of a request: its x-request-id as sent when that is a
// uuid (Envoy generates one for every request, so the id is in every log line of the request),
// otherwise a fresh uuid, so every error body can still be found in the logs.
func TraceID(requestID string) string {
	if IsUUID(requestID) {
		return requestID
	}
	return uuid.NewString()
}
