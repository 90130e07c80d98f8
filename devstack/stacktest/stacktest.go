// Package stacktest gives tests the real components they run against — a migrated PostgreSQL,
// a Redis, a whole stack — started on free ports and stopped when the test ends, so no test
// file repeats the start, migrate and connect steps.
package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/schema"
)

// PostgresDB is a migrated PostgreSQL with a pool on it.
type PostgresDB struct {
	*devstack.Postgres
	Pool *pgxpool.Pool
}

// Close closes the pool and stops the server.
func (db *PostgresDB) Close() {
	db.Pool.Close()
	db.Postgres.Stop()
}

// StartPostgres starts a PostgreSQL on a free port, migrates it to the current schema and
// opens a pool, for a package's TestMain; Close undoes it.
func StartPostgres(ctx context.Context) (*PostgresDB, error) {
	port, err := devstack.FreePort()
	if err != nil {
		return nil, err
	}
	pg, err := devstack.StartPostgres(ctx, port)
	if err != nil {
		return nil, err
	}
	if err := schema.Migrate(ctx, pg.DSN); err != nil {
		pg.Stop()
		return nil, err
	}
	pool, err := pgxpool.New(ctx, pg.DSN)
	if err != nil {
		pg.Stop()
		return nil, err
	}
	return &PostgresDB{Postgres: pg, Pool: pool}, nil
}

// Postgres is StartPostgres for one test: a missing server fails the test, and the database
// goes when the test ends.
func Postgres(t testing.TB) *PostgresDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// BarePostgres starts an empty PostgreSQL (no schema) on a free port for one test, stopped
// when the test ends: for tests of the migrations themselves.
func BarePostgres(t testing.TB) *devstack.Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pg, err := devstack.StartPostgres(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	return pg
}

// Redis starts a Redis on a free port for one test, stopped when the test ends.
func Redis(t testing.TB) *devstack.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	port, err := devstack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r, err := devstack.StartRedis(ctx, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}
