package devstack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ElasticMQ is a local SQS (ElasticMQ on the machine's Java) with the product's queues:
// `votes`, redriving to `votes-dlq` after 5 receives.
type ElasticMQ struct {
	Endpoint string
	Port     int
	proc     *Process
	conf     string
	out      *os.File
}

// AccountID is the account part of local queue URLs.
const AccountID = "000000000000"

const elasticMQConf = `include classpath("application.conf")
node-address { protocol = http, host = "127.0.0.1", port = %[1]d, context-path = "" }
rest-sqs { enabled = true, bind-port = %[1]d, bind-hostname = "127.0.0.1", sqs-limits = strict }
rest-stats { enabled = false }
generate-node-address = false
queues {
  votes-dlq { }
  votes {
    defaultVisibilityTimeout = 30 seconds
    deadLettersQueue { name = "votes-dlq", maxReceiveCount = 5 }
  }
}
aws { region = us-east-1, accountId = "%[2]s" }
`

// StartElasticMQ serves SQS on 127.0.0.1:port with the product's queues, empty.
func StartElasticMQ(ctx context.Context, port int) (*ElasticMQ, error) {
	lib, err := toolPath("elasticmq/lib")
	if err != nil {
		return nil, err
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("java not found: %w", err)
	}
	logs := stateDir("logs")
	out, err := logFile(logs, fmt.Sprintf("elasticmq-%d", port))
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(logs, fmt.Sprintf("elasticmq-%d.conf", port))
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(elasticMQConf, port, AccountID)), 0o644); err != nil {
		return nil, err
	}
	q := &ElasticMQ{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), Port: port, conf: conf, out: out}
	q.proc, err = startProcess("elasticmq", elasticMQCommand(java, lib, conf), out)
	if err != nil {
		return nil, err
	}
	if err := q.waitReady(ctx); err != nil {
		q.Stop()
		return nil, err
	}
	return q, nil
}

func elasticMQCommand(java, lib, conf string) *exec.Cmd {
	// A small heap and the serial collector keep the JVM from competing with Envoy for the
	// two cores of a dev box.
	return exec.Command(java, "-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dconfig.file="+conf, "-cp", lib+"/*", "org.elasticmq.server.Main")
}

func (q *ElasticMQ) waitReady(ctx context.Context) error {
	return waitFor(ctx, q.proc, 60*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, q.Endpoint+"/?Action=ListQueues", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ListQueues: %s", resp.Status)
		}
		return nil
	})
}

// QueueURL is the URL of a queue on this server.
func (q *ElasticMQ) QueueURL(name string) string {
	return strings.Join([]string{q.Endpoint, AccountID, name}, "/")
}

// Stop terminates the server; queued messages are lost (it keeps them in memory), so there is
// nothing to wait for beyond a short grace: its orderly JVM shutdown takes ~10 s.
func (q *ElasticMQ) Stop() { q.proc.Stop(2 * time.Second) }

// Kill stops the server abruptly, for failure tests.
func (q *ElasticMQ) Kill() { q.proc.Kill() }

// Start brings a stopped server back on the same port (with empty queues).
func (q *ElasticMQ) Start(ctx context.Context) error {
	java, err := exec.LookPath("java")
	if err != nil {
		return err
	}
	lib, err := toolPath("elasticmq/lib")
	if err != nil {
		return err
	}
	q.proc, err = startProcess("elasticmq", elasticMQCommand(java, lib, q.conf), q.out)
	if err != nil {
		return err
	}
	return q.waitReady(ctx)
}
