package auth

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math/big"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// The prepared keys must give crypto/rsa's answer for every signature: right, wrong, out of
// range, of the wrong length, or a valid PKCS #1 v1.5 signature of another hash.
func TestPreparedRS256MatchesCryptoRSA(t *testing.T) {
	keys := map[string]*rsa.PrivateKey{}
	for _, bits := range []int{1024, 2048, 3072, 4096} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		keys[big.NewInt(int64(bits)).String()+" bits"] = k
	}
	// Exponent 3, built by hand (GenerateKey always picks 65537): signatures then come from
	// crypto/rsa signing with that key.
	if k := keyWithExponent3(t); k != nil {
		keys["2048 bits, e=3"] = k
	}

	const msg = "header.payload"
	for name, key := range keys {
		t.Run(name, func(t *testing.T) {
			var p preparedKeys
			pub := &key.PublicKey
			if prepared := p.get(pub) != nil; prepared != (pub.N.BitLen() >= 2048) {
				t.Fatalf("prepared = %v for a %d-bit key", prepared, pub.N.BitLen())
			}
			h := sha256.Sum256([]byte(msg))
			good, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
			if err != nil {
				t.Fatal(err)
			}
			h512 := sha512.Sum512([]byte(msg))
			other512, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA512, h512[:])
			raw := func(em []byte) []byte { // the "signature" whose public image is em
				return new(big.Int).Exp(new(big.Int).SetBytes(em), key.D, key.N).FillBytes(make([]byte, pub.Size()))
			}
			flipped := append([]byte(nil), good...)
			flipped[len(flipped)/2] ^= 1
			random := make([]byte, pub.Size())
			rand.Read(random)
			nBytes := pub.N.FillBytes(make([]byte, pub.Size()))
			aboveN := new(big.Int).Add(pub.N, big.NewInt(1)).FillBytes(make([]byte, pub.Size()))
			// Encodings a lenient parser would accept: block type 2, padding other than 0xff,
			// and a short padding with bytes after the hash.
			digest := append(append([]byte{}, sha256DigestInfo...), h[:]...)
			encode := func(bt, ps byte) []byte {
				em := make([]byte, pub.Size())
				em[1] = bt
				for i := 2; i < len(em)-len(digest)-1; i++ {
					em[i] = ps
				}
				copy(em[len(em)-len(digest):], digest)
				return em
			}
			trailing := make([]byte, pub.Size())
			trailing[1] = 1
			for i := 2; i < 10; i++ {
				trailing[i] = 0xff
			}
			copy(trailing[11:], digest)
			for i := 11 + len(digest); i < len(trailing); i++ {
				trailing[i] = 0xab
			}
			sigs := map[string][]byte{
				"good":             good,
				"flipped bit":      flipped,
				"random":           random,
				"zero":             make([]byte, pub.Size()),
				"one":              new(big.Int).SetInt64(1).FillBytes(make([]byte, pub.Size())),
				"equal to N":       nBytes,
				"above N":          aboveN,
				"short":            good[1:],
				"long":             append([]byte{0}, good...),
				"empty":            nil,
				"SHA-512 DER":      other512,
				"block type 2":     raw(encode(2, 0xff)),
				"padding 0xfe":     raw(encode(1, 0xfe)),
				"bytes after hash": raw(trailing),
				"rebuilt by hand":  raw(encode(1, 0xff)),
			}
			for sname, sig := range sigs {
				want := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
				got := p.verifyRS256(msg, sig, pub) == nil
				if got != want {
					t.Errorf("%s: prepared verification = %v, crypto/rsa = %v", sname, got, want)
				}
				// The message matters too.
				if p.verifyRS256(msg+"x", sig, pub) == nil {
					t.Errorf("%s: accepted for another message", sname)
				}
			}
			if p.verifyRS256(msg, good, pub) != nil {
				t.Error("the good signature was refused")
			}
		})
	}
}

func TestPreparedRS256NeedsAnRSAKey(t *testing.T) {
	var p preparedKeys
	for _, key := range []any{nil, []byte("secret"), "pem", &rsa.PrivateKey{}} {
		if err := p.verifyRS256("a.b", []byte{1}, key); !errors.Is(err, jwt.ErrInvalidKeyType) {
			t.Errorf("key %T: err = %v, want ErrInvalidKeyType", key, err)
		}
	}
}

// The prepared form is built once per key object and the map stays bounded.
func TestPreparedKeysBounded(t *testing.T) {
	var p preparedKeys
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	first := p.get(&k.PublicKey)
	if first == nil || p.get(&k.PublicKey) != first {
		t.Fatal("the prepared key is not reused")
	}
	for range 3 * maxPreparedKeys {
		p.get(&rsa.PublicKey{N: k.N, E: k.E})
	}
	if n := len(p.m); n > maxPreparedKeys {
		t.Errorf("%d prepared keys held, bound %d", n, maxPreparedKeys)
	}
}

// keyWithExponent3 finds a 2048-bit key with e = 3 (primes p ≡ 2 mod 3).
func keyWithExponent3(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	three := big.NewInt(3)
	prime := func() *big.Int {
		for {
			p, err := rand.Prime(rand.Reader, 1024)
			if err != nil {
				t.Fatal(err)
			}
			if new(big.Int).Mod(p, three).Int64() == 2 {
				return p
			}
		}
	}
	for range 20 {
		p, q := prime(), prime()
		n := new(big.Int).Mul(p, q)
		if n.BitLen() != 2048 {
			continue
		}
		phi := new(big.Int).Mul(new(big.Int).Sub(p, big.NewInt(1)), new(big.Int).Sub(q, big.NewInt(1)))
		d := new(big.Int).ModInverse(three, phi)
		if d == nil {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 3}, D: d, Primes: []*big.Int{p, q}}
		if err := k.Validate(); err != nil {
			continue
		}
		k.Precompute()
		return k
	}
	t.Log("no e=3 key found")
	return nil
}
