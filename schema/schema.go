// Package schema owns the PostgreSQL schema shared by the control plane and the workers and
// applies its migrations with goose.
package schema

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for goose
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate brings the database at dsn up to the newest migration. It is safe to call from
// several processes at once: goose serialises them with a session lock.
func Migrate(ctx context.Context, dsn string) error {
	return migrate(ctx, dsn, func(ctx context.Context, p *goose.Provider) error {
		_, err := p.Up(ctx)
		return err
	})
}

// MigrateTo brings the database at dsn up to the given version only, so a migration can be
// tested against data the versions before it wrote.
func MigrateTo(ctx context.Context, dsn string, version int64) error {
	return migrate(ctx, dsn, func(ctx context.Context, p *goose.Provider) error {
		_, err := p.UpTo(ctx, version)
		return err
	})
}

// MigrateDownTo rolls the database at dsn back to the given version, for tests of a migration's
// way back.
func MigrateDownTo(ctx context.Context, dsn string, version int64) error {
	return migrate(ctx, dsn, func(ctx context.Context, p *goose.Provider) error {
		_, err := p.DownTo(ctx, version)
		return err
	})
}

func migrate(ctx context.Context, dsn string, up func(context.Context, *goose.Provider) error) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if err := up(ctx, provider); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}
