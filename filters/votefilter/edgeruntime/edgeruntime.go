// Package edgeruntime holds what the vote filter keeps for the life of the Envoy process it
// runs in: the Go runtime's settings for living inside Envoy, and the process-wide clients
// (Redis pools, SQS batchers, JWKS caches, secret-file watchers), shared by endpoint because
// every config push builds a new filter config while connections, caches and their goroutines
// must survive it. Plain Go: the Envoy adapter only asks it for clients.
package edgeruntime

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only when VOTEFILTER_PPROF_ADDR is set
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/enqueue"
	"github.com/tvvote/voting/filters/votefilter/secretfile"
)

func init() {
	// Envoy's worker threads enter Go through cgo callbacks, and a callback needs a free P.
	// With one P per core, CPU-bound admission goroutines (RS256) can hold every P, and a
	// worker thread, with all its connections, waits for the scheduler's preemption: that
	// showed as a 100-300 ms p99 at 70 % load. Spare Ps let callbacks in at once; the OS
	// still shares the same cores. An explicit GOMAXPROCS in Envoy's environment wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(8, 4*runtime.NumCPU()))
	}
	// Profiling the Go side of Envoy: the module's goroutines, GC and cgo calls.
	if addr := os.Getenv("VOTEFILTER_PPROF_ADDR"); addr != "" {
		go func() {
			slog.Error("pprof server stopped", "component", "votefilter", "err", http.ListenAndServe(addr, nil))
		}()
	}
}

// clients are the process-wide connections of the filter, by endpoint.
var clients = struct {
	sync.Mutex
	redis   map[redisKey]func() (rueidis.Client, error)
	sqs     map[edgeconfig.SQSConfig]*enqueue.Batcher
	jwks    map[string]*auth.JWKS
	secrets map[string]*secretfile.File
}{
	redis:   map[redisKey]func() (rueidis.Client, error){},
	sqs:     map[edgeconfig.SQSConfig]*enqueue.Batcher{},
	jwks:    map[string]*auth.JWKS{},
	secrets: map[string]*secretfile.File{},
}

// Secret returns the process-wide watcher of a secret file: a config push must not lose a
// rotation's previous secret, nor start another poller. A file that cannot be read refuses the
// config (Envoy NACKs it) and is tried again at the next push.
func Secret(path string, log *slog.Logger) (*secretfile.File, error) {
	clients.Lock()
	defer clients.Unlock()
	if f, ok := clients.secrets[path]; ok {
		return f, nil
	}
	f, err := secretfile.Open(path, log)
	if err != nil {
		return nil, err
	}
	go f.Watch(context.Background(), secretfile.PollInterval)
	clients.secrets[path] = f
	return f, nil
}

// Redis returns the process-wide client source of the admission store (dedup.Dial). An AUTH
// token file that cannot be read fails the config, as a missing secret does.
func Redis(cfg edgeconfig.RedisConfig, log *slog.Logger) (func() (rueidis.Client, error), error) {
	e := dedup.Endpoint{Addr: cfg.Addr, Cluster: cfg.Cluster, TLS: cfg.TLS}
	if cfg.AuthTokenFile != "" {
		token, err := Secret(cfg.AuthTokenFile, log)
		if err != nil {
			return nil, err
		}
		e.Password = func() string { return string(token.Current()) }
	}
	clients.Lock()
	defer clients.Unlock()
	key := redisKey{cfg.Addr, cfg.Cluster, cfg.TLS, cfg.AuthTokenFile}
	c, ok := clients.redis[key]
	if !ok {
		c = dedup.Dial(e)
		clients.redis[key] = c
	}
	return c, nil
}

type redisKey struct {
	addr      string
	cluster   bool
	tls       bool
	tokenFile string
}

// JWKS returns the process-wide key cache of a JWKS endpoint, refreshed hourly and on an unknown
// key id.
func JWKS(url string) *auth.JWKS {
	clients.Lock()
	defer clients.Unlock()
	j, ok := clients.jwks[url]
	if !ok {
		j = auth.NewJWKS(context.Background(), url, time.Hour)
		clients.jwks[url] = j
	}
	return j
}

// Queue returns the process-wide vote batcher of a queue; onBatch is told every batch's size.
func Queue(cfg edgeconfig.SQSConfig, onBatch func(int)) (*enqueue.Batcher, error) {
	clients.Lock()
	defer clients.Unlock()
	if b, ok := clients.sqs[cfg]; ok {
		return b, nil
	}
	c, err := enqueue.NewSQSClient(cfg)
	if err != nil {
		return nil, err
	}
	b := enqueue.NewBatcher(c, cfg.QueueURL, enqueue.BatchOptions{OnBatch: onBatch})
	clients.sqs[cfg] = b
	return b, nil
}

// Admission is one filter config's admission logic on the process-wide clients.
type Admission struct {
	Admitter *votefilter.Admitter
	// SiteSecret is the siteverify site secret, in siteverify mode.
	SiteSecret *secretfile.File
}

// Build wires cfg's admission logic: the token verifier, every region's store and queue, the
// captcha secrets. Whatever hosts it (the Envoy module, or a plain HTTP service for comparison)
// runs the same admission. onBatch is told every SQS batch's size.
func Build(cfg *edgeconfig.Config, log *slog.Logger, onBatch func(int)) (Admission, error) {
	verifier := auth.NewVerifier(JWKS(cfg.JWT.JWKSURL), cfg.JWT.Issuer, cfg.JWT.Audience,
		time.Duration(cfg.JWT.LeewaySeconds)*time.Second)
	verifier.PermissionsClaim = cfg.JWT.PermissionsClaim
	verifier.HomeRegionClaim = cfg.JWT.HomeRegionClaim
	return BuildVerifying(cfg, log, onBatch, verifier)
}

// BuildVerifying is Build with another token verifier (a benchmark variant trusting a subject
// Envoy verified).
func BuildVerifying(cfg *edgeconfig.Config, log *slog.Logger, onBatch func(int), verifier votefilter.Verifier) (Admission, error) {
	local, err := regionStore(cfg.Redis, cfg.SQS, log, onBatch)
	if err != nil {
		return Admission{}, err
	}
	peers := map[string]votefilter.Store{}
	for _, p := range cfg.PeerRegions {
		if peers[p.Name], err = regionStore(p.Redis, p.SQS, log, onBatch); err != nil {
			return Admission{}, fmt.Errorf("peer region %s: %w", p.Name, err)
		}
	}
	// Only the active mode's secret must be readable: a region may run siteverify on edges that
	// have no proof-of-work secret.
	var out Admission
	var powKeys captcha.Keys
	switch cfg.Captcha.Mode {
	case edgeconfig.CaptchaPoW:
		f, err := Secret(cfg.Captcha.PoW.SecretFile, log)
		if err != nil {
			return Admission{}, err
		}
		powKeys = f
	case edgeconfig.CaptchaSiteverify:
		if out.SiteSecret, err = Secret(cfg.Captcha.Siteverify.SecretFile, log); err != nil {
			return Admission{}, err
		}
	}
	if out.Admitter, err = votefilter.NewAdmitter(cfg, verifier, local.Gate, local.Queue, powKeys); err != nil {
		return Admission{}, err
	}
	if len(cfg.PeerRegions) > 0 {
		if err := out.Admitter.WithPeerRegions(peers); err != nil {
			return Admission{}, err
		}
	}
	out.Admitter.Log = log
	return out, nil
}

// regionStore is the admission store and the vote queue of one region, on the process-wide
// clients of their endpoints.
func regionStore(r edgeconfig.RedisConfig, q edgeconfig.SQSConfig, log *slog.Logger, onBatch func(int)) (votefilter.Store, error) {
	queue, err := Queue(q, onBatch)
	if err != nil {
		return votefilter.Store{}, err
	}
	store, err := Redis(r, log)
	if err != nil {
		return votefilter.Store{}, err
	}
	gate := dedup.NewGateDialing(store, dedup.Options{
		DedupTTL:     time.Duration(r.DedupTTLSeconds) * time.Second,
		PendingTTL:   time.Duration(r.PendingTTLSeconds) * time.Second,
		WaitReplicas: r.WaitReplicas, WaitTimeout: time.Duration(r.WaitTimeoutMs) * time.Millisecond})
	gate.OnUnreplicated = unreplicatedReporter(r, log)
	return votefilter.Store{Gate: gate, Queue: queue}, nil
}

// unreplicatedReporter logs votes answered before a replica held their entry (Redis WAIT timed
// out: a replica lags or is being replaced), at most once a second with the count since the
// last line, so a primary left without a replica does not flood the log with one line a vote.
func unreplicatedReporter(cfg edgeconfig.RedisConfig, log *slog.Logger) func() {
	var mu sync.Mutex
	var last time.Time
	var n int
	return func() {
		mu.Lock()
		defer mu.Unlock()
		n++
		if time.Since(last) < time.Second {
			return
		}
		log.Warn("votes answered before a replica held their entry (Redis WAIT timed out); a failover now could forget them",
			"votes", n, "waitReplicas", cfg.WaitReplicas, "waitTimeoutMs", cfg.WaitTimeoutMs)
		last, n = time.Now(), 0
	}
}
