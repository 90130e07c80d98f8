package edgeruntime

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/rueidis"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// Every config push asks for its clients again: it must get the same ones, or each push would
// leak connection pools, JWKS pollers and secret watchers, and lose a rotation's old secret.
func TestClientsAreSharedByEndpoint(t *testing.T) {
	r1, err := dial(t, edgeconfig.RedisConfig{Addr: "127.0.0.1:1"})()
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := dial(t, edgeconfig.RedisConfig{Addr: "127.0.0.1:1"})()
	r3, _ := dial(t, edgeconfig.RedisConfig{Addr: "127.0.0.1:2"})()
	if r1 != r2 || r1 == r3 {
		t.Errorf("Redis: same address gave %p and %p, another %p", r1, r2, r3)
	}
	// A cluster that does not answer yet is no error for the config, only for each call.
	if _, err := dial(t, edgeconfig.RedisConfig{Addr: "127.0.0.1:1,127.0.0.1:2", Cluster: true})(); err == nil {
		t.Error("a cluster with no node up gave a client")
	}
	if JWKS("http://127.0.0.1:1/jwks") != JWKS("http://127.0.0.1:1/jwks") || JWKS("http://127.0.0.1:1/a") == JWKS("http://127.0.0.1:1/b") {
		t.Error("JWKS caches are not shared by URL")
	}
	cfg := edgeconfig.SQSConfig{QueueURL: "http://127.0.0.1:1/000000000000/votes", Region: "us-east-1",
		Endpoint: "http://127.0.0.1:1", StaticCredentials: true}
	q1, err := Queue(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	q2, _ := Queue(cfg, nil)
	if q1 != q2 {
		t.Error("batchers are not shared by queue")
	}
	path := filepath.Join(t.TempDir(), "pow")
	if err := os.WriteFile(path, []byte("0123456789abcdef-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s1, err := Secret(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := Secret(path, nil); s1 != s2 {
		t.Error("secret watchers are not shared by path")
	}
	if _, err := Secret(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("a missing secret file was accepted")
	}
}

func dial(t *testing.T, cfg edgeconfig.RedisConfig) func() (rueidis.Client, error) {
	t.Helper()
	d, err := Redis(cfg, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// An AUTH token file that cannot be read refuses the config, as a missing secret does; one that
// can is used.
func TestRedisAuthTokenFile(t *testing.T) {
	if _, err := Redis(edgeconfig.RedisConfig{Addr: "127.0.0.1:1", AuthTokenFile: filepath.Join(t.TempDir(), "missing")}, slog.Default()); err == nil {
		t.Fatal("a missing AUTH token file was accepted")
	}
	path := filepath.Join(t.TempDir(), "redis-auth")
	if err := os.WriteFile(path, []byte("an-auth-token-of-enough-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Redis(edgeconfig.RedisConfig{Addr: "127.0.0.1:1", AuthTokenFile: path}, slog.Default()); err != nil {
		t.Fatalf("a readable AUTH token file was refused: %v", err)
	}
}
