package envoymodule

import (
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when VOTEFILTER_PPROF_ADDR is set
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/redis/rueidis"

	"github.com/tvvote/voting/auth"
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
		go func() { log.Error("pprof server stopped", "error", http.ListenAndServe(addr, nil)) }()
	}
}

// clients are the process-wide connections of the filter. Every config push builds a new
// filter config, but connection pools, JWKS caches and their goroutines must survive it, so
// they are shared by endpoint for the life of the Envoy process.
var clients = struct {
	sync.Mutex
	redis   map[string]rueidis.Client
	sqs     map[edgeconfig.SQSConfig]*enqueue.Batcher
	jwks    map[string]*auth.JWKS
	secrets map[string]*secretfile.File
}{
	redis:   map[string]rueidis.Client{},
	sqs:     map[edgeconfig.SQSConfig]*enqueue.Batcher{},
	jwks:    map[string]*auth.JWKS{},
	secrets: map[string]*secretfile.File{},
}

// secret returns the process-wide watcher of a secret file: a config push must not lose a
// rotation's previous secret, nor start another poller. A file that cannot be read refuses the
// config (Envoy NACKs it) and is tried again at the next push.
func secret(path string) (*secretfile.File, error) {
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

func redisClient(addr string) (rueidis.Client, error) {
	clients.Lock()
	defer clients.Unlock()
	c, ok := clients.redis[addr]
	if !ok {
		var err error
		if c, err = dedup.NewClient(addr); err != nil {
			return nil, err
		}
		clients.redis[addr] = c
	}
	return c, nil
}

func jwks(url string) *auth.JWKS {
	clients.Lock()
	defer clients.Unlock()
	j, ok := clients.jwks[url]
	if !ok {
		j = auth.NewJWKS(context.Background(), url, time.Hour)
		clients.jwks[url] = j
	}
	return j
}

// batcher returns the process-wide vote batcher of a queue.
func batcher(cfg edgeconfig.SQSConfig) (*enqueue.Batcher, error) {
	clients.Lock()
	defer clients.Unlock()
	if b, ok := clients.sqs[cfg]; ok {
		return b, nil
	}
	httpClient := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}
	var awsCfg aws.Config
	if cfg.StaticCredentials {
		awsCfg = aws.Config{
			Region:      cfg.Region,
			Credentials: credentials.NewStaticCredentialsProvider("local", "local", ""),
		}
	} else {
		var err error
		awsCfg, err = awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(cfg.Region))
		if err != nil {
			return nil, fmt.Errorf("aws config: %w", err)
		}
	}
	awsCfg.HTTPClient = httpClient
	// The batcher retries failed entries itself, within each vote's deadline, and must see
	// every attempt's error: the SDK would report only the last one, and a refused connection
	// on a retry would hide that the first attempt may have reached SQS.
	awsCfg.RetryMaxAttempts = 1
	c := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	b := enqueue.NewBatcher(c, cfg.QueueURL, enqueue.BatchOptions{OnBatch: reportBatch})
	clients.sqs[cfg] = b
	return b, nil
}
