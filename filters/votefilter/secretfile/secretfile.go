// Package secretfile gives the edge its secrets (the proof-of-work key, the siteverify site
// secret) from files on the Envoy host rather than from the filter config, which Envoy shows to
// anyone who can read its admin /config_dump. A file is read again every poll, so a secret is
// rotated by replacing the file, without restarting Envoy or the control plane; the secret it
// replaced stays known, for the challenges it signed that have not expired yet.
package secretfile

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MinLength is the fewest bytes a secret may have: anything shorter is a half-written file or a
// placeholder, not a secret.
const MinLength = 16

// PollInterval is how often a watched file is read again. A changed file is taken on the read
// after the one that first saw it, so a new secret is in use within two intervals.
const PollInterval = time.Second

// File is one secret file: the secret in use and, after a rotation, the one before it. It is safe
// for concurrent use.
type File struct {
	path string
	log  *slog.Logger

	mu       sync.RWMutex
	current  []byte
	previous []byte
	rotated  time.Time // when current replaced previous
	pending  []byte    // a changed content seen once, taken if the next read sees it again
	failing  bool      // the last read failed; logged once until the file reads well again
}

// Open reads path, which must hold a secret of at least MinLength bytes (surrounding white space,
// such as the newline an editor adds, is not part of it). Errors name the path, never the
// content.
func Open(path string, log *slog.Logger) (*File, error) {
	if log == nil {
		log = slog.Default()
	}
	secret, err := read(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, log: log, current: secret}, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Current is the secret in use. The caller must not change it.
func (f *File) Current() []byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.current
}

// Keys returns the secret in use, the one it replaced (nil before any rotation) and when the
// rotation happened. The caller must not change them.
func (f *File) Keys() (current, previous []byte, rotatedAt time.Time) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.current, f.previous, f.rotated
}

// Reload reads the file once and reports whether the secret in use changed. A content that
// differs from the secret in use is taken only when two reads in a row find it, so a file read
// while it was being rewritten in place never becomes the secret. A file that cannot be read,
// or holds too little, leaves the secret in use as it is.
func (f *File) Reload(now time.Time) (bool, error) {
	secret, err := read(f.path)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.pending = nil
		return false, err
	}
	if subtle.ConstantTimeCompare(secret, f.current) == 1 {
		f.pending = nil
		return false, nil
	}
	if f.pending == nil || subtle.ConstantTimeCompare(secret, f.pending) != 1 {
		f.pending = secret
		return false, nil
	}
	f.previous, f.current, f.rotated, f.pending = f.current, secret, now, nil
	return true, nil
}

// Watch reloads the file every interval until ctx ends, logging rotations and failures (never
// the secret).
func (f *File) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f.poll(now)
		}
	}
}

func (f *File) poll(now time.Time) {
	changed, err := f.Reload(now)
	switch {
	case err != nil:
		if !f.failing {
			f.log.Error("secret file unreadable; the secret in use stays", "path", f.path, "err", err)
		}
		f.failing = true
	case changed:
		f.failing = false
		f.log.Info("secret file changed; the new secret is in use, the previous one still verifies", "path", f.path)
	default:
		if f.failing {
			f.log.Info("secret file readable again", "path", f.path)
		}
		f.failing = false
	}
}

func read(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	secret := bytes.TrimSpace(b)
	if len(secret) < MinLength {
		return nil, fmt.Errorf("secret file %s holds %d bytes, fewer than %d", path, len(secret), MinLength)
	}
	return secret, nil
}
