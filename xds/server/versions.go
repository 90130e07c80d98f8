package server

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SequenceVersions takes versions from the PostgreSQL sequence xds_config_version, so they keep
// increasing across restarts of the control plane: an Envoy that reconnects to a restarted
// control plane never sees a version go backwards.
type SequenceVersions struct {
	Pool *pgxpool.Pool
}

// Next returns the sequence's next value.
func (s SequenceVersions) Next(ctx context.Context) (uint64, error) {
	var v int64
	err := s.Pool.QueryRow(ctx, `SELECT nextval('xds_config_version')`).Scan(&v)
	return uint64(v), err
}
