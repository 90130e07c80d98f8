package votefilter

import "bytes"

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// isUUID reports whether s is a canonical 8-4-4-4-12 hex uuid, as the contract's format: uuid.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
