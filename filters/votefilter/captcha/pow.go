// Package captcha checks that a vote comes from a person (or at least from someone who paid
// for it): a self-hosted proof of work, or a third-party siteverify service (reCAPTCHA,
// Turnstile, hCaptcha), whose HTTP call the Envoy adapter makes.
package captcha

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// ErrFailed is wrapped by every verification failure.
var ErrFailed = errors.New("captcha failed")

// PoW issues HMAC-signed challenges and checks SHA-256 work on them. A challenge is
// "<id>.<expiry unix>.<difficulty>.<mac>"; the solved token is "<challenge>:<nonce>" where
// sha256(challenge ":" nonce) starts with `difficulty` zero bits. Replays are stopped by the
// caller, which records each challenge id until its expiry (see ReplayKey).
type PoW struct {
	keys       Keys
	Difficulty int
	TTL        time.Duration
}

// Keys gives the secret that signs challenges and, once it has been rotated, the secret it
// replaced and when. Every edge of the fleet must share them.
type Keys interface {
	Keys() (current, previous []byte, rotatedAt time.Time)
}

// StaticKey is a secret that is never rotated.
type StaticKey []byte

// Keys implements Keys.
func (k StaticKey) Keys() ([]byte, []byte, time.Time) { return k, nil, time.Time{} }

// RotationMargin keeps a replaced secret a little longer than the challenge TTL: the edges of a
// fleet see a new secret file at slightly different moments, and one that took it late may
// still have signed with the old secret.
const RotationMargin = 30 * time.Second

// NewPoW builds a PoW checker.
func NewPoW(keys Keys, difficulty int, ttl time.Duration) (*PoW, error) {
	if keys == nil {
		return nil, errors.New("captcha: pow needs a secret")
	}
	if current, _, _ := keys.Keys(); len(current) < 16 {
		return nil, errors.New("captcha: pow secret must be at least 16 bytes")
	}
	if difficulty < 1 || difficulty > 32 {
		return nil, errors.New("captcha: pow difficulty must be 1..32 bits")
	}
	return &PoW{keys: keys, Difficulty: difficulty, TTL: ttl}, nil
}

// Challenge is what GET /api/v1/votes/challenge returns.
type Challenge struct {
	Challenge  string    `json:"challenge"`
	Difficulty int       `json:"difficulty"`
	ExpiresAt  time.Time `json:"expiresAt"`
	Algorithm  string    `json:"algorithm"`
}

// Issue creates a fresh challenge.
func (p *PoW) Issue(now time.Time) (Challenge, error) {
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Challenge{}, err
	}
	exp := now.Add(p.TTL).Unix()
	payload := base64.RawURLEncoding.EncodeToString(id[:]) + "." + strconv.FormatInt(exp, 10) + "." + strconv.Itoa(p.Difficulty)
	current, _, _ := p.keys.Keys()
	return Challenge{
		Challenge:  payload + "." + mac(current, payload),
		Difficulty: p.Difficulty,
		ExpiresAt:  time.Unix(exp, 0).UTC(),
		Algorithm:  "sha256-leading-zero-bits",
	}, nil
}

// Solved is a verified token: ID must be recorded until Expiry to refuse replays.
type Solved struct {
	ID     string
	Expiry time.Time
}

// Verify checks a solved token's signature, expiry and work.
func (p *PoW) Verify(token string, now time.Time) (Solved, error) {
	challenge, nonce, ok := strings.Cut(token, ":")
	if !ok || nonce == "" || len(nonce) > 64 {
		return Solved{}, fmt.Errorf("%w: malformed proof-of-work token", ErrFailed)
	}
	parts := strings.Split(challenge, ".")
	if len(parts) != 4 {
		return Solved{}, fmt.Errorf("%w: malformed challenge", ErrFailed)
	}
	payload := strings.Join(parts[:3], ".")
	if !p.signed(payload, parts[3], now) {
		return Solved{}, fmt.Errorf("%w: challenge not issued here", ErrFailed)
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() > exp {
		return Solved{}, fmt.Errorf("%w: challenge expired", ErrFailed)
	}
	difficulty, err := strconv.Atoi(parts[2])
	if err != nil || difficulty < p.Difficulty {
		return Solved{}, fmt.Errorf("%w: challenge difficulty too low", ErrFailed)
	}
	if LeadingZeroBits(Work(challenge, nonce)) < difficulty {
		return Solved{}, fmt.Errorf("%w: not enough work", ErrFailed)
	}
	return Solved{ID: parts[0], Expiry: time.Unix(exp, 0)}, nil
}

// ReplayKey is the Redis key recording a used challenge.
func ReplayKey(id string) string { return "pow:" + id }

// Work is the hash a solver must drive below the target.
func Work(challenge, nonce string) [32]byte {
	return sha256.Sum256([]byte(challenge + ":" + nonce))
}

// LeadingZeroBits counts the zero bits at the start of h.
func LeadingZeroBits(h [32]byte) int {
	n := 0
	for i := 0; i < len(h); i += 8 {
		w := binary.BigEndian.Uint64(h[i:])
		if w != 0 {
			return n + bits.LeadingZeros64(w)
		}
		n += 64
	}
	return n
}

// Solve finds a nonce for a challenge: what a viewer's app does, used by tests and load tests.
func Solve(challenge string, difficulty int) string {
	for i := uint64(0); ; i++ {
		nonce := strconv.FormatUint(i, 36)
		if LeadingZeroBits(Work(challenge, nonce)) >= difficulty {
			return challenge + ":" + nonce
		}
	}
}

// signed reports whether sig is payload's MAC under the secret in use or, for the challenge TTL
// after a rotation (and RotationMargin), under the secret it replaced: challenges issued just
// before a rotation stay good until they expire, and an old secret stops working after that.
func (p *PoW) signed(payload, sig string, now time.Time) bool {
	current, previous, rotated := p.keys.Keys()
	if hmac.Equal([]byte(sig), []byte(mac(current, payload))) {
		return true
	}
	return previous != nil && now.Before(rotated.Add(p.TTL+RotationMargin)) &&
		hmac.Equal([]byte(sig), []byte(mac(previous, payload)))
}

// mac is payload's truncated HMAC-SHA256 under secret.
func mac(secret []byte, payload string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}
