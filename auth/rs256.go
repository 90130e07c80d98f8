package auth

import (
	"bytes"
	"crypto"
	"crypto/fips140"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"sync"

	"filippo.io/bigmod"
	"github.com/golang-jwt/jwt/v5"
)

// rs256Key is an RSA public key prepared once for RS256 verification. crypto/rsa rebuilds the
// Montgomery form of the modulus from the *rsa.PublicKey on every VerifyPKCS1v15 call, about
// 40 % of a verification; bigmod (the standalone copy of the standard library's own modular
// arithmetic) lets the edge build it once per key.
type rs256Key struct {
	n    *bigmod.Modulus
	e    uint
	size int
}

// sha256DigestInfo is the DER prefix PKCS #1 v1.5 puts before a SHA-256 hash (RFC 8017, 9.2).
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// newRS256Key prepares pub, or returns nil when pub is one that crypto/rsa should judge itself:
// keys below 2048 bits or with an unusual exponent (crypto/rsa's own rules and errors apply to
// those), and any key in FIPS 140 mode, where only the validated module may verify.
func newRS256Key(pub *rsa.PublicKey) *rs256Key {
	if fips140.Enabled() || pub == nil || pub.N == nil || pub.N.Sign() <= 0 || pub.N.BitLen() < 2048 ||
		pub.N.Bit(0) == 0 || pub.E < 3 || pub.E&1 == 0 || pub.E > 1<<31-1 {
		return nil
	}
	n, err := bigmod.NewModulus(pub.N.Bytes())
	if err != nil {
		return nil
	}
	return &rs256Key{n: n, e: uint(pub.E), size: n.Size()}
}

// verify checks an RSASSA-PKCS1-v1_5 SHA-256 signature over signed the way crypto/rsa does:
// the signature must be exactly the modulus' length and below it, and its public-key image must
// equal the encoding rebuilt from the hash byte for byte (never parsed, so no lenient padding).
func (k *rs256Key) verify(signed string, sig []byte) error {
	if len(sig) != k.size {
		return rsa.ErrVerification
	}
	s, err := bigmod.NewNat().SetBytes(sig, k.n)
	if err != nil {
		return rsa.ErrVerification
	}
	em := bigmod.NewNat().ExpShortVarTime(s, k.e, k.n).Bytes(k.n)
	hashed := sha256.Sum256([]byte(signed))
	// em = 0x00 0x01 0xff… 0x00 DigestInfo H, with at least 8 bytes of 0xff.
	tail := len(sha256DigestInfo) + len(hashed)
	if k.size < tail+11 || em[0] != 0 || em[1] != 1 || em[k.size-tail-1] != 0 {
		return rsa.ErrVerification
	}
	for _, b := range em[2 : k.size-tail-1] {
		if b != 0xff {
			return rsa.ErrVerification
		}
	}
	if !bytes.Equal(em[k.size-tail:k.size-len(hashed)], sha256DigestInfo) || !bytes.Equal(em[k.size-len(hashed):], hashed[:]) {
		return rsa.ErrVerification
	}
	return nil
}

// preparedKeys holds the prepared form of each *rsa.PublicKey the key set has handed out. A
// JWKS refresh parses new key objects, so entries are keyed by the object and the map is
// started afresh when it grows past a few key sets' worth.
type preparedKeys struct {
	mu sync.RWMutex
	m  map[*rsa.PublicKey]*rs256Key
}

const maxPreparedKeys = 64

func (p *preparedKeys) get(pub *rsa.PublicKey) *rs256Key {
	p.mu.RLock()
	k, ok := p.m[pub]
	p.mu.RUnlock()
	if ok {
		return k
	}
	k = newRS256Key(pub)
	p.mu.Lock()
	if p.m == nil || len(p.m) >= maxPreparedKeys {
		p.m = make(map[*rsa.PublicKey]*rs256Key)
	}
	p.m[pub] = k
	p.mu.Unlock()
	return k
}

// verifyRS256 checks sig over signed with key, which must be an *rsa.PublicKey (as golang-jwt's
// RS256 demands); prepared keys take the fast path, others go through crypto/rsa.
func (p *preparedKeys) verifyRS256(signed string, sig []byte, key any) error {
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: RS256 needs an RSA public key, the key set gave %T", jwt.ErrInvalidKeyType, key)
	}
	if k := p.get(pub); k != nil {
		return k.verify(signed, sig)
	}
	hashed := sha256.Sum256([]byte(signed))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, hashed[:], sig)
}
