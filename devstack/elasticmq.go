package devstack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ElasticMQ is a local SQS (ElasticMQ on the machine's Java) with the product's queues:
// `votes`, redriving to `votes-dlq` after 5 receives. Like SQS, it has stored a message before
// it acknowledges it: messages live in an H2 database in .state/data/elasticmq-<port>/, empty
// at start and removed at Stop, so they survive kill -9 and a restart.
type ElasticMQ struct {
	Endpoint string
	Port     int
	queues   []string // vote queues, each with its dead-letter queue
	child
	release func()
}

// AccountID is the account part of local queue URLs.
const AccountID = "000000000000"

// h2Settings make H2 write every commit to its file before the commit returns. By default H2
// delays that by up to 500 ms (WRITE_DELAY), and ElasticMQ acknowledges a SendMessage once its
// INSERT has committed: kill -9 right after 20,000 acknowledged sends lost 2,022 of them with the
// default and none with WRITE_DELAY=0. It is the process's crash that matters here, not the
// machine's, so no fsync is asked for.
const h2Settings = ";WRITE_DELAY=0"

const elasticMQConf = `include classpath("application.conf")
node-address { protocol = http, host = "127.0.0.1", port = %[1]d, context-path = "" }
rest-sqs { enabled = true, bind-port = %[1]d, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false }
generate-node-address = false
queues {
%[5]s}
aws { region = us-east-1, accountId = "%[2]s" }
messages-storage { enabled = %[3]t, uri = %[4]q }
`

// queueConf is one vote queue and its dead-letter queue, as every region has them.
const queueConf = `  %[1]s-dlq { }
  %[1]s {
    defaultVisibilityTimeout = 30 seconds
    deadLettersQueue { name = "%[1]s-dlq", maxReceiveCount = 5 }
  }
`

// ElasticMQOptions configure StartElasticMQWith.
type ElasticMQOptions struct {
	// InMemory keeps messages in memory only: several times faster, and a kill or restart
	// loses every queued message. Only for benchmarks that say so.
	InMemory bool
	// Queues are more vote queues beside `votes`, each with its `<name>-dlq`: the queues of
	// further regions.
	Queues []string
}

// StartElasticMQ serves SQS on 127.0.0.1:port with the product's queues, empty, stored on disk.
func StartElasticMQ(ctx context.Context, port int) (*ElasticMQ, error) {
	return StartElasticMQWith(ctx, port, ElasticMQOptions{})
}

// StartElasticMQWith is StartElasticMQ with options.
func StartElasticMQWith(ctx context.Context, port int, o ElasticMQOptions) (*ElasticMQ, error) {
	lib, err := toolPath("elasticmq/lib")
	if err != nil {
		return nil, err
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("java not found: %w", err)
	}
	q := &ElasticMQ{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Port: port, release: func() {}}
	uri := ""
	if !o.InMemory {
		dir, release, err := claimDataDir(fmt.Sprintf("elasticmq-%d", port))
		if err != nil {
			return nil, err
		}
		q.release = release
		uri = "jdbc:h2:" + filepath.Join(dir, "elasticmq") + h2Settings
	}
	logs := stateDir("logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		q.release()
		return nil, err
	}
	conf := filepath.Join(logs, fmt.Sprintf("elasticmq-%d.conf", port))
	var queues strings.Builder
	q.queues = append([]string{"votes"}, o.Queues...)
	for _, name := range q.queues {
		fmt.Fprintf(&queues, queueConf, name)
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, elasticMQConf, port, AccountID, !o.InMemory, uri, queues.String()), 0o644); err != nil {
		q.release()
		return nil, err
	}
	q.child = child{
		name:    ComponentElasticMQ,
		logPath: filepath.Join(logs, fmt.Sprintf("elasticmq-%d.log", port)),
		command: func() (*exec.Cmd, error) {
			// A small heap and the serial collector keep the JVM from competing with Envoy for the
			// two cores of a dev box.
			return exec.Command(java, "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
				"-Dconfig.file="+conf, "-cp", lib+"/*", "org.elasticmq.server.Main"), nil
		},
		ready:        q.listQueues,
		readyTimeout: 60 * time.Second,
	}
	if err := q.Start(ctx); err != nil {
		q.Stop()
		return nil, err
	}
	return q, nil
}

// listQueues succeeds once ListQueues lists the product's queues. ElasticMQ answers HTTP
// before it has created (or restored) them, and restores a queue's stored messages just after
// the queue, so a receive right after this may still briefly come back empty.
func (q *ElasticMQ) listQueues(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, q.Endpoint+"/?Action=ListQueues", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ListQueues: %s", resp.Status)
	}
	for _, name := range q.queues {
		if !bytes.Contains(body, []byte("<QueueUrl>"+q.QueueURL(name+"-dlq")+"</QueueUrl>")) ||
			!bytes.Contains(body, []byte("<QueueUrl>"+q.QueueURL(name)+"</QueueUrl>")) {
			return fmt.Errorf("queue %s not created yet", name)
		}
	}
	return nil
}

// QueueURL is the URL of a queue on this server.
func (q *ElasticMQ) QueueURL(name string) string {
	return strings.Join([]string{q.Endpoint, AccountID, name}, "/")
}

// Stop terminates the server and removes its data. As the data goes anyway there is nothing to
// wait for beyond a short grace: its orderly JVM shutdown takes ~10 s.
func (q *ElasticMQ) Stop() {
	q.stop(syscall.SIGTERM, 2*time.Second)
	q.release()
}
