package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/devstack"
)

// Guarantee 4: with the JWKS endpoint down, tokens signed by cached keys still verify; when
// the identity provider comes back with a new key, its tokens verify too (unknown kid →
// refresh).
func TestJWKSOutageKeepsCachedKeysAndRotationIsPickedUp(t *testing.T) {
	before := token(t, uuid.NewString())
	if err := stack.Kill(devstack.ComponentDevIdP); err != nil {
		t.Fatal(err)
	}
	if r := vote(t, before, "", ballot(t, 0)); r.status != http.StatusOK {
		t.Fatalf("vote with a cached key while the JWKS is down: %d %s", r.status, r.body)
	}
	if err := stack.Restart(context.Background(), devstack.ComponentDevIdP); err != nil {
		t.Fatal(err)
	}
	var after string
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := stack.Token(context.Background(), uuid.NewString(), false)
		if err == nil {
			after = tok
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev IdP not back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := vote(t, after, "", ballot(t, 1)); r.status != http.StatusOK {
		t.Fatalf("vote with a token of the rotated key: %d %s", r.status, r.body)
	}
}
