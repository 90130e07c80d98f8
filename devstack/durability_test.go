package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// The engines stand in for SQS, ElastiCache and RDS, which keep what they acknowledged across a
// crash; these tests kill each with SIGKILL under load and check nothing acknowledged is gone.

func needTool(t *testing.T, find func() error) {
	t.Helper()
	if err := find(); err != nil {
		t.Skipf("tool missing: %v", err)
	}
}

func lookPath(name string) func() error {
	return func() error { _, err := exec.LookPath(name); return err }
}

// killAt names a moment to kill: once `share` of the messages are acknowledged, while the
// others are still being sent (mid-load), or the moment the last acknowledgement arrives.
var killMoments = []struct {
	name  string
	share float64
}{{"at the last ack", 1}, {"mid-load", 0.5}}

func TestElasticMQKeepsAckedMessagesAcrossKill(t *testing.T) {
	needTool(t, func() error { _, err := toolPath("elasticmq/lib"); return err })
	needTool(t, lookPath("java"))
	for _, moment := range killMoments {
		t.Run(moment.name, func(t *testing.T) {
			const total, senders = 3000, 16
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			q, err := StartElasticMQ(ctx, port(t))
			if err != nil {
				t.Fatal(err)
			}
			defer q.Stop()
			queue := q.QueueURL("votes")
			client := sqsClient(q)

			var mu sync.Mutex
			acked := map[string]string{} // message id → body
			var ackedN, next atomic.Int64
			var killOnce sync.Once
			killed := make(chan struct{})
			var wg sync.WaitGroup
			for range senders {
				wg.Go(func() {
					for {
						b := next.Add(1) - 1
						if b >= total/10 {
							return
						}
						select {
						case <-killed:
							return
						default:
						}
						bodies := map[string]string{}
						var entries []types.SendMessageBatchRequestEntry
						for i := range 10 {
							id := strconv.Itoa(i)
							bodies[id] = fmt.Sprintf("vote %d", b*10+int64(i))
							entries = append(entries, types.SendMessageBatchRequestEntry{Id: aws.String(id), MessageBody: aws.String(bodies[id])})
						}
						out, err := client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &queue, Entries: entries})
						if err != nil {
							continue // not acknowledged: may or may not be stored
						}
						mu.Lock()
						for _, s := range out.Successful {
							acked[*s.MessageId] = bodies[*s.Id]
						}
						mu.Unlock()
						if ackedN.Add(int64(len(out.Successful))) >= int64(moment.share*total) {
							killOnce.Do(func() {
								if err := q.Kill(); err != nil {
									t.Error(err)
								}
								close(killed)
							})
						}
					}
				})
			}
			wg.Wait()
			select {
			case <-killed:
			default:
				t.Fatalf("only %d of %d messages acknowledged; ElasticMQ never killed", ackedN.Load(), total)
			}
			if q.Running() {
				t.Fatal("ElasticMQ still running after Kill")
			}
			if err := q.Start(ctx); err != nil {
				t.Fatal(err)
			}

			// ElasticMQ restores a queue's messages just after the queue, so receive until every
			// acknowledged one is back or nothing more comes.
			got := map[string]string{}
			deadline := time.Now().Add(30 * time.Second)
			for missing(acked, got) > 0 && time.Now().Before(deadline) {
				out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &queue, MaxNumberOfMessages: 10,
					VisibilityTimeout: 600, WaitTimeSeconds: 1})
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range out.Messages {
					got[*m.MessageId] = *m.Body
				}
			}
			if n := missing(acked, got); n > 0 {
				t.Fatalf("%d of %d acknowledged messages lost by kill -9 (%d received after restart)", n, len(acked), len(got))
			}
			for id, body := range acked {
				if got[id] != body {
					t.Fatalf("message %s came back as %q, sent %q", id, got[id], body)
				}
			}
			t.Logf("%d acknowledged before kill -9, all back after restart (%d received, the rest unacknowledged sends)",
				len(acked), len(got))
		})
	}
}

func missing(acked, got map[string]string) int {
	n := 0
	for id := range acked {
		if _, ok := got[id]; !ok {
			n++
		}
	}
	return n
}

func sqsClient(q *ElasticMQ) *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(q.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("local", "local", ""),
		// A retry could resend a batch that was stored but whose answer was lost.
		RetryMaxAttempts: 1,
	})
}

func TestRedisKeepsKeysAcrossKill(t *testing.T) {
	needTool(t, lookPath("redis-server"))
	for _, moment := range killMoments {
		t.Run(moment.name, func(t *testing.T) {
			const total, writers = 5000, 16
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := StartRedis(ctx, port(t))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Stop()
			rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, PoolSize: writers})
			defer rdb.Close()

			var mu sync.Mutex
			var acked []int
			var next atomic.Int64
			var killOnce sync.Once
			killed := make(chan struct{})
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= total {
							return
						}
						select {
						case <-killed:
							return
						default:
						}
						if err := rdb.Set(ctx, "voted:"+strconv.Itoa(i), "candidate-"+strconv.Itoa(i), time.Hour).Err(); err != nil {
							continue
						}
						mu.Lock()
						acked = append(acked, i)
						n := len(acked)
						mu.Unlock()
						if n >= int(moment.share*total) {
							killOnce.Do(func() {
								if err := r.Kill(); err != nil {
									t.Error(err)
								}
								close(killed)
							})
						}
					}
				})
			}
			wg.Wait()
			select {
			case <-killed:
			default:
				t.Fatalf("only %d of %d writes acknowledged; Redis never killed", len(acked), total)
			}
			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			after := redis.NewClient(&redis.Options{Addr: r.Addr})
			defer after.Close()
			lost := 0
			for _, i := range acked {
				v, err := after.Get(ctx, "voted:"+strconv.Itoa(i)).Result()
				if errors.Is(err, redis.Nil) {
					lost++
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if v != "candidate-"+strconv.Itoa(i) {
					t.Fatalf("key %d holds %q", i, v)
				}
			}
			if lost > 0 {
				t.Fatalf("%d of %d acknowledged keys lost by kill -9", lost, len(acked))
			}
			if ttl, err := after.TTL(ctx, "voted:"+strconv.Itoa(acked[0])).Result(); err != nil || ttl <= 0 {
				t.Fatalf("expiry lost across the restart: ttl %v, %v", ttl, err)
			}
			t.Logf("%d acknowledged keys before kill -9, all back after restart", len(acked))
		})
	}
}

func TestPostgresKeepsCommittedRowsAcrossKill(t *testing.T) {
	needTool(t, func() error { _, err := postgresBin("postgres"); return err })
	const total, writers = 2000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := StartPostgres(ctx, port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	want := filepath.Join(stateDir("data"), fmt.Sprintf("postgres-%d", pg.Port))
	if os.Geteuid() == 0 && !reachable(want, postgresUID(t)) {
		// The checkout is under a folder the postgres user may not enter: a temp folder of its own.
		want = filepath.Join(os.TempDir(), fmt.Sprintf("voting-postgres-%d-", pg.Port))
	}
	if !pg.dataIn(want) {
		t.Fatalf("data directory is not %s", want)
	}
	pool, err := pgxpool.New(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE ballots (id int PRIMARY KEY, candidate text NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	// Killed mid-load: some inserts are committed, some in flight, some never sent.
	var mu sync.Mutex
	var committed []int
	var next atomic.Int64
	var killOnce sync.Once
	killed := make(chan struct{})
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				select {
				case <-killed:
					return
				default:
				}
				if i >= total {
					return
				}
				if _, err := pool.Exec(ctx, `INSERT INTO ballots VALUES ($1, $2)`, i, "candidate-"+strconv.Itoa(i)); err != nil {
					continue
				}
				mu.Lock()
				committed = append(committed, i)
				n := len(committed)
				mu.Unlock()
				if n >= total/2 {
					killOnce.Do(func() {
						if err := pg.Kill(); err != nil {
							t.Error(err)
						}
						close(killed)
					})
				}
			}
		})
	}
	wg.Wait()
	pool.Close()
	select {
	case <-killed:
	default:
		t.Fatalf("only %d of %d inserts committed; PostgreSQL never killed", len(committed), total)
	}
	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pool, err = pgxpool.New(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows := map[int]string{}
	rs, err := pool.Query(ctx, `SELECT id, candidate FROM ballots`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var id int
		var c string
		if err := rs.Scan(&id, &c); err != nil {
			t.Fatal(err)
		}
		rows[id] = c
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, i := range committed {
		if c, ok := rows[i]; !ok {
			lost++
		} else if c != "candidate-"+strconv.Itoa(i) {
			t.Fatalf("row %d holds %q", i, c)
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d committed rows lost by kill -9", lost, len(committed))
	}
	t.Logf("%d rows committed before kill -9, all there after crash recovery (%d rows in all)", len(committed), len(rows))
}

// dataIn reports whether the server's data directory is dir.
func postgresUID(t *testing.T) int {
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return uid
}

// dataIn says whether the server's data directory is dir, or, for dir ending in "-", a folder
// named with that prefix.
func (p *Postgres) dataIn(dir string) bool {
	cmd, err := p.command()
	if err != nil {
		return false
	}
	for i, a := range cmd.Args {
		if a == "-D" && i+1 < len(cmd.Args) {
			if strings.HasSuffix(dir, "-") {
				return strings.HasPrefix(cmd.Args[i+1], dir)
			}
			return cmd.Args[i+1] == dir
		}
	}
	return false
}
