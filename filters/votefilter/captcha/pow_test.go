package captcha

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef-test"

var now = time.Date(2026, 1, 15, 21, 0, 0, 500000000, time.UTC)

func newPoW(t testing.TB, s string, difficulty int) *PoW {
	t.Helper()
	p, err := NewPoW(StaticKey(s), difficulty, 300*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func issue(t testing.TB, p *PoW, at time.Time) Challenge {
	t.Helper()
	c, err := p.Issue(at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewPoWRejects(t *testing.T) {
	for _, tc := range []struct {
		secret     string
		difficulty int
	}{{"short", 8}, {"0123456789abcde", 8}, {secret, 0}, {secret, 33}, {secret, -1}} {
		if p, err := NewPoW(StaticKey(tc.secret), tc.difficulty, time.Minute); err == nil || p != nil {
			t.Errorf("NewPoW(%q, %d) = %v, %v; want an error", tc.secret, tc.difficulty, p, err)
		}
	}
	if p, err := NewPoW(nil, 8, time.Minute); err == nil || p != nil {
		t.Errorf("NewPoW without keys = %v, %v; want an error", p, err)
	}
	if _, err := NewPoW(StaticKey("0123456789abcdef"), 32, time.Minute); err != nil {
		t.Errorf("16-byte secret at difficulty 32: %v", err)
	}
}

func TestIssueSolveVerify(t *testing.T) {
	p := newPoW(t, secret, 10)
	c := issue(t, p, now)
	wantExp := time.Date(2026, 1, 15, 21, 5, 0, 0, time.UTC)
	if c.Difficulty != 10 || !c.ExpiresAt.Equal(wantExp) || c.ExpiresAt.Location() != time.UTC || c.Algorithm != "sha256-leading-zero-bits" {
		t.Errorf("challenge = %+v", c)
	}
	parts := strings.Split(c.Challenge, ".")
	if len(parts) != 4 {
		t.Fatalf("challenge %q has %d parts", c.Challenge, len(parts))
	}
	if id, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || len(id) != 12 {
		t.Errorf("id %q is not 12 random bytes (%v)", parts[0], err)
	}
	if parts[1] != strconv.FormatInt(wantExp.Unix(), 10) || parts[2] != "10" {
		t.Errorf("payload %q", c.Challenge)
	}
	tok := Solve(c.Challenge, 10)
	ch, nonce, ok := strings.Cut(tok, ":")
	if !ok || ch != c.Challenge || LeadingZeroBits(Work(ch, nonce)) < 10 {
		t.Fatalf("Solve = %q does not solve the challenge", tok)
	}
	s, err := p.Verify(tok, now)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if s.ID != parts[0] || !s.Expiry.Equal(wantExp) {
		t.Errorf("Solved = %+v, want id %s until %v", s, parts[0], wantExp)
	}
	if ReplayKey(s.ID) != "pow:"+parts[0] {
		t.Errorf("ReplayKey = %q", ReplayKey(s.ID))
	}
	// Good through the whole expiry second, refused after it.
	if _, err := p.Verify(tok, wantExp.Add(999*time.Millisecond)); err != nil {
		t.Errorf("in the expiry second: %v", err)
	}
	if _, err := p.Verify(tok, wantExp.Add(time.Second)); !errors.Is(err, ErrFailed) {
		t.Errorf("after the expiry second: %v, want ErrFailed", err)
	}
	// Another edge of the fleet with the same secret accepts it; difficulty may be lowered
	// by a config push without breaking challenges already issued.
	if _, err := newPoW(t, secret, 4).Verify(tok, now); err != nil {
		t.Errorf("same secret, lower difficulty: %v", err)
	}
	// Challenges are unique.
	seen := map[string]bool{}
	for range 100 {
		c := issue(t, p, now)
		if seen[c.Challenge] {
			t.Fatal("challenge issued twice")
		}
		seen[c.Challenge] = true
	}
}

func TestVerifyRejects(t *testing.T) {
	p := newPoW(t, secret, 8)
	c := issue(t, p, now)
	parts := strings.Split(c.Challenge, ".")
	good := Solve(c.Challenge, 8)
	_, goodNonce, _ := strings.Cut(good, ":")
	weak := ""
	for i := 0; weak == ""; i++ {
		if n := strconv.Itoa(i); LeadingZeroBits(Work(c.Challenge, n)) < 8 {
			weak = n
		}
	}
	join := func(ps ...string) string { return strings.Join(ps, ".") }
	// A challenge with another payload keeps its MAC: every field is signed.
	later := strconv.FormatInt(now.Add(time.Hour).Unix(), 10)
	sign := func(payload string) string { return mac([]byte(secret), payload) }

	tests := map[string]string{
		"empty":                              "",
		"no nonce separator":                 c.Challenge,
		"empty nonce":                        c.Challenge + ":",
		"nonce of 65 characters":             c.Challenge + ":" + strings.Repeat("a", 65),
		"not enough work":                    c.Challenge + ":" + weak,
		"three parts":                        join(parts[0], parts[1], parts[2]) + ":" + goodNonce,
		"five parts":                         c.Challenge + ".x:" + goodNonce,
		"mac of another secret":              Solve(issue(t, newPoW(t, "another-secret-16b", 8), now).Challenge, 8),
		"mac truncated":                      Solve(join(parts[0], parts[1], parts[2], parts[3][:10]), 8),
		"mac empty":                          Solve(join(parts[0], parts[1], parts[2], ""), 8),
		"expiry changed":                     Solve(join(parts[0], later, parts[2], parts[3]), 8),
		"difficulty changed":                 Solve(join(parts[0], parts[1], "1", parts[3]), 1),
		"id changed":                         Solve(join("AAAAAAAAAAAAAAAA", parts[1], parts[2], parts[3]), 8),
		"expired":                            Solve(issue(t, p, now.Add(-301*time.Second)).Challenge, 8),
		"difficulty below the edge's":        Solve(issue(t, newPoW(t, secret, 4), now).Challenge, 4),
		"signed but expiry not a number":     Solve(join(parts[0], "soon", parts[2], sign(join(parts[0], "soon", parts[2]))), 8),
		"signed but difficulty not a number": Solve(join(parts[0], parts[1], "x", sign(join(parts[0], parts[1], "x"))), 8),
		"signed negative difficulty":         Solve(join(parts[0], parts[1], "-1", sign(join(parts[0], parts[1], "-1"))), 1),
		"signed difficulty beyond 256":       join(parts[0], parts[1], "300", sign(join(parts[0], parts[1], "300"))) + ":" + goodNonce,
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := p.Verify(tok, now)
			if err == nil {
				t.Fatalf("accepted as %+v", s)
			}
			if !errors.Is(err, ErrFailed) {
				t.Errorf("error %v does not wrap ErrFailed", err)
			}
			if s != (Solved{}) {
				t.Errorf("returned %+v with the error", s)
			}
		})
	}
	// A valid MAC over a valid payload with an inflated, signed difficulty is fine when the
	// work reaches it (the edge's own challenges are issued at its difficulty).
	hard := join(parts[0], parts[1], "12", sign(join(parts[0], parts[1], "12")))
	if _, err := p.Verify(Solve(hard, 12), now); err != nil {
		t.Errorf("signed higher difficulty with enough work: %v", err)
	}
}

func TestLeadingZeroBits(t *testing.T) {
	h := func(prefix ...byte) [32]byte {
		var b [32]byte
		for i := range b {
			b[i] = 0xff
		}
		copy(b[:], prefix)
		return b
	}
	var zero [32]byte
	last := zero
	last[31] = 1
	tests := []struct {
		name string
		h    [32]byte
		want int
	}{
		{"ff…", h(), 0},
		{"7f…", h(0x7f), 1},
		{"01…", h(0x01), 7},
		{"00 80…", h(0x00, 0x80), 8},
		{"00 0f…", h(0x00, 0x0f), 12},
		{"00 00 00 01", h(0, 0, 0, 1), 31},
		{"first word zero, 80 after", h(0, 0, 0, 0, 0, 0, 0, 0, 0x80), 64},
		{"first word zero, 01 after", h(0, 0, 0, 0, 0, 0, 0, 0, 0x01), 71},
		{"three words zero", h(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40), 193},
		{"only the last bit", last, 255},
		{"all zero", zero, 256},
	}
	for _, tc := range tests {
		if got := LeadingZeroBits(tc.h); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	// Work is sha256 of "challenge:nonce".
	if Work("c", "n") != sha256.Sum256([]byte("c:n")) {
		t.Error("Work is not sha256(challenge:nonce)")
	}
}

// FuzzVerify: Verify never panics, and whatever it accepts is a signed, unexpired challenge
// with enough work.
//
//	go test ./filters/votefilter/captcha -run '^$' -fuzz FuzzVerify -fuzztime 30s
func FuzzVerify(f *testing.F) {
	p := newPoW(f, secret, 4)
	c := issue(f, p, now)
	good := Solve(c.Challenge, 4)
	for _, s := range []string{good, c.Challenge, c.Challenge + ":", ":", "...:", "a.b.c.d:e", good + good,
		strings.Replace(good, ".", "..", 1), good + strings.Repeat("0", 70), "\x00:\xff", strings.Repeat(":", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := p.Verify(tok, now)
		if err != nil {
			if !errors.Is(err, ErrFailed) || s != (Solved{}) {
				t.Fatalf("Verify(%q) = %+v, %v", tok, s, err)
			}
			return
		}
		ch, nonce, _ := strings.Cut(tok, ":")
		parts := strings.Split(ch, ".")
		if len(parts) != 4 || parts[3] != mac([]byte(secret), strings.Join(parts[:3], ".")) {
			t.Fatalf("accepted %q without a valid MAC", tok)
		}
		if s.ID != parts[0] || now.After(s.Expiry.Add(time.Second)) {
			t.Fatalf("accepted %q as %+v at %v", tok, s, now)
		}
		if LeadingZeroBits(Work(ch, nonce)) < p.Difficulty {
			t.Fatalf("accepted %q without enough work", tok)
		}
	})
}

// rotating is a secret file's keys as the PoW sees them.
type rotating struct {
	current, previous []byte
	at                time.Time
}

func (r *rotating) Keys() ([]byte, []byte, time.Time) { return r.current, r.previous, r.at }

// After a rotation new challenges are signed with the new secret; challenges signed with the
// old one verify until the TTL (and the margin) after the rotation, then never again.
func TestRotationKeepsThePreviousSecretForTheTTL(t *testing.T) {
	const next = "fedcba9876543210-next"
	keys := &rotating{current: []byte(secret)}
	p, err := NewPoW(keys, 8, 300*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before := Solve(issue(t, p, now).Challenge, 8)

	rotatedAt := now.Add(10 * time.Second)
	keys.current, keys.previous, keys.at = []byte(next), []byte(secret), rotatedAt
	after := Solve(issue(t, p, rotatedAt).Challenge, 8)
	if _, err := newPoW(t, next, 8).Verify(after, rotatedAt); err != nil {
		t.Fatalf("a challenge issued after the rotation is not signed with the new secret: %v", err)
	}
	if _, err := newPoW(t, secret, 8).Verify(after, rotatedAt); err == nil {
		t.Fatal("a challenge issued after the rotation verifies with the old secret")
	}
	for _, at := range []time.Time{rotatedAt, rotatedAt.Add(290 * time.Second)} {
		if _, err := p.Verify(before, at); err != nil {
			t.Errorf("challenge issued before the rotation, verified %v after it: %v", at.Sub(rotatedAt), err)
		}
		if _, err := p.Verify(after, at); err != nil {
			t.Errorf("challenge issued after the rotation, verified %v after it: %v", at.Sub(rotatedAt), err)
		}
	}
	// Forged with the old secret, expiring far away: refused once the old secret has aged out.
	parts := strings.Split(issue(t, newPoW(t, secret, 8), now).Challenge, ".")
	far := strconv.FormatInt(now.Add(24*time.Hour).Unix(), 10)
	forged := Solve(strings.Join([]string{parts[0], far, parts[2], mac([]byte(secret), strings.Join([]string{parts[0], far, parts[2]}, "."))}, "."), 8)
	late := rotatedAt.Add(300*time.Second + RotationMargin)
	if _, err := p.Verify(forged, late); !errors.Is(err, ErrFailed) {
		t.Fatalf("old secret still verifies %v after the rotation: %v", late.Sub(rotatedAt), err)
	}
	if _, err := p.Verify(forged, late.Add(-time.Second)); err != nil {
		t.Fatalf("old secret refused within the TTL and margin: %v", err)
	}
}
