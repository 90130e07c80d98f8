package dedup

import (
	"os"
	"testing"
)

// knownBug skips a test that pins down a reported, not yet fixed bug in non-test code, so
// the suite stays green for everyone else. VOTEFILTER_KNOWN_BUGS=1 runs them; remove the
// call once the bug is fixed.
func knownBug(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("VOTEFILTER_KNOWN_BUGS") == "" {
		t.Skip("known bug, not fixed yet: " + what + " (VOTEFILTER_KNOWN_BUGS=1 runs it)")
	}
}
