package secretfile

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	first  = "first-secret-0123456789"
	second = "second-secret-0123456789"
)

var t0 = time.Date(2026, 1, 15, 21, 0, 0, 0, time.UTC)

func write(t *testing.T, path, content string) {
	t.Helper()
	// Written beside and renamed over, as a rotation should be.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestOpenReadsTheSecretWithoutSurroundingSpace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pow")
	write(t, path, "  "+first+"\n")
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cur, prev, at := f.Keys()
	if string(cur) != first || prev != nil || !at.IsZero() || string(f.Current()) != first || f.Path() != path {
		t.Fatalf("keys %q %q %v", cur, prev, at)
	}
}

func TestOpenRefusesMissingAndShortFilesWithoutShowingThem(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing"), nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
	short := filepath.Join(dir, "short")
	write(t, short, "tooshort-secret\n") // 15 bytes without the newline
	_, err := Open(short, nil)
	if err == nil || !strings.Contains(err.Error(), short) || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("short file: %v", err)
	}
}

// A changed file is taken once two reads in a row agree; the old secret is kept as the previous.
func TestReloadTakesAStableChangeAndKeepsThePrevious(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pow")
	write(t, path, first)
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := f.Reload(t0); changed || err != nil {
		t.Fatalf("unchanged file: %t %v", changed, err)
	}
	write(t, path, second)
	if changed, err := f.Reload(t0); changed || err != nil || string(f.Current()) != first {
		t.Fatalf("first sight of a change: %t %v, current %q", changed, err, f.Current())
	}
	at := t0.Add(time.Second)
	if changed, err := f.Reload(at); !changed || err != nil {
		t.Fatalf("second sight of the change: %t %v", changed, err)
	}
	cur, prev, rotated := f.Keys()
	if string(cur) != second || string(prev) != first || !rotated.Equal(at) {
		t.Fatalf("after rotation: %q %q %v", cur, prev, rotated)
	}
}

// A file caught half written, then finished, never becomes the secret in its half form.
func TestReloadIgnoresATransientContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pow")
	write(t, path, first)
	f, _ := Open(path, nil)
	write(t, path, second[:18]) // a long enough prefix of the new secret
	f.Reload(t0)
	write(t, path, second)
	if changed, _ := f.Reload(t0.Add(time.Second)); changed {
		t.Fatal("took a content seen once")
	}
	if changed, _ := f.Reload(t0.Add(2 * time.Second)); !changed || string(f.Current()) != second {
		t.Fatalf("current %q", f.Current())
	}
}

func TestReloadKeepsTheSecretWhenTheFileBreaks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pow")
	write(t, path, first)
	f, _ := Open(path, nil)
	for _, broken := range []func(){
		func() { os.Remove(path) },
		func() { write(t, path, "") },
		func() { write(t, path, "short") },
	} {
		broken()
		for range 3 {
			if changed, err := f.Reload(t0); changed || err == nil {
				t.Fatalf("broken file: %t %v", changed, err)
			}
		}
		if string(f.Current()) != first {
			t.Fatalf("current %q", f.Current())
		}
	}
}

// Watch logs the rotation and a broken file by path, never the secret.
func TestWatchLogsWithoutTheSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pow")
	write(t, path, first)
	logs := &lockedBuffer{}
	f, _ := Open(path, slog.New(slog.NewJSONHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Watch(ctx, 5*time.Millisecond); close(done) }()
	write(t, path, second)
	deadline := time.Now().Add(5 * time.Second)
	for string(f.Current()) != second {
		if time.Now().After(deadline) {
			t.Fatal("rotation not picked up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	os.Remove(path)
	for !strings.Contains(logs.String(), "unreadable") {
		if time.Now().After(deadline) {
			t.Fatal("broken file not logged")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	out := logs.String()
	if strings.Contains(out, first) || strings.Contains(out, second) || !strings.Contains(out, path) ||
		strings.Count(out, "unreadable") != 1 {
		t.Fatalf("logs:\n%s", out)
	}
}

// lockedBuffer is written by the watcher while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
