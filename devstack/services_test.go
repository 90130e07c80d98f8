package devstack

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func port(t *testing.T) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServicesStartAndAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	pg, err := StartPostgres(ctx, port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Stop()
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("select 1 = %d, %v", one, err)
	}
	conn.Close(ctx)

	r, err := StartRedis(ctx, port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PING\r\n"))
	buf := make([]byte, 7)
	if _, err := c.Read(buf); err != nil || string(buf) != "+PONG\r\n" {
		t.Fatalf("redis PING answered %q, %v", buf, err)
	}
	c.Close()

	q, err := StartElasticMQ(ctx, port(t))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Stop()
	resp, err := http.Get(q.Endpoint + "/?Action=GetQueueUrl&QueueName=votes-dlq")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("votes-dlq queue missing: %s", resp.Status)
	}
}
