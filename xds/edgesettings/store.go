package edgesettings

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/audit"
)

// ErrNotFound means the scope has no stored override.
var ErrNotFound = errors.New("no override for this scope")

// Stored is one scope's override with who set it and when.
type Stored struct {
	Scope string `json:"scope"`
	Override
	UpdatedAt time.Time `json:"updatedAt"`
	UpdatedBy string    `json:"updatedBy"`
}

// Store reads and writes edge_settings.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore works through pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const columns = `scope, per_viewer_max, per_viewer_window_seconds, per_ip_max, per_ip_window_seconds,
	COALESCE(captcha_mode, ''), trusted_hops, proxy_protocol, updated_at, updated_by`

// Load returns every override, for the snapshot builder.
func (s *Store) Load(ctx context.Context) (Set, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Set{}, err
	}
	set := Set{Regions: map[string]Override{}}
	for _, st := range all {
		if st.Scope == Global {
			set.Global = st.Override
		} else {
			set.Regions[st.Scope] = st.Override
		}
	}
	return set, nil
}

// List returns every stored override, global first, then regions by name.
func (s *Store) List(ctx context.Context) ([]Stored, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM edge_settings ORDER BY scope <> '*', scope`)
	if err != nil {
		return nil, fmt.Errorf("load edge settings: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanStored)
	if err != nil {
		return nil, fmt.Errorf("load edge settings: %w", err)
	}
	return out, nil
}

// Get returns one scope's override or ErrNotFound.
func (s *Store) Get(ctx context.Context, scope string) (Stored, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM edge_settings WHERE scope = $1`, scope)
	if err != nil {
		return Stored{}, err
	}
	st, err := pgx.CollectExactlyOneRow(rows, scanStored)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stored{}, ErrNotFound
	}
	return st, err
}

// Put replaces scope's override (PUT semantics: an absent field inherits), audits the change
// and notifies the control plane, all in one transaction.
func (s *Store) Put(ctx context.Context, who audit.Actor, scope string, o Override) (Stored, error) {
	var out Stored
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := lockScope(ctx, tx, scope)
		if err != nil {
			return err
		}
		pvMax, pvWin := limitColumns(o.PerViewer)
		ipMax, ipWin := limitColumns(o.PerIP)
		var mode *string
		if o.CaptchaMode != "" {
			mode = &o.CaptchaMode
		}
		rows, err := tx.Query(ctx, `INSERT INTO edge_settings AS s (scope, per_viewer_max, per_viewer_window_seconds,
				per_ip_max, per_ip_window_seconds, captcha_mode, trusted_hops, proxy_protocol, updated_at, updated_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9)
			ON CONFLICT (scope) DO UPDATE SET per_viewer_max = $2, per_viewer_window_seconds = $3,
				per_ip_max = $4, per_ip_window_seconds = $5, captcha_mode = $6, trusted_hops = $7,
				proxy_protocol = $8, updated_at = now(), updated_by = $9
			RETURNING `+columns, scope, pvMax, pvWin, ipMax, ipWin, mode, o.TrustedHops, o.ProxyProtocol, who.Subject)
		if err != nil {
			return err
		}
		if out, err = pgx.CollectExactlyOneRow(rows, scanStored); err != nil {
			return err
		}
		if err := audit.Write(ctx, tx, who, "edge_settings.put", "edge_settings", scope, "", before, out); err != nil {
			return err
		}
		return notify(ctx, tx, scope)
	})
	if err != nil {
		return Stored{}, fmt.Errorf("put edge settings %s: %w", scope, err)
	}
	return out, nil
}

// Delete removes scope's override, so it inherits again; ErrNotFound if there was none.
func (s *Store) Delete(ctx context.Context, who audit.Actor, scope string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := lockScope(ctx, tx, scope)
		if err != nil {
			return err
		}
		if before == nil {
			return ErrNotFound
		}
		if _, err := tx.Exec(ctx, `DELETE FROM edge_settings WHERE scope = $1`, scope); err != nil {
			return err
		}
		if err := audit.Write(ctx, tx, who, "edge_settings.delete", "edge_settings", scope, "", before, nil); err != nil {
			return err
		}
		return notify(ctx, tx, scope)
	})
}

// lockScope reads the scope's row for update; nil when it does not exist.
func lockScope(ctx context.Context, tx pgx.Tx, scope string) (*Stored, error) {
	rows, err := tx.Query(ctx, `SELECT `+columns+` FROM edge_settings WHERE scope = $1 FOR UPDATE`, scope)
	if err != nil {
		return nil, err
	}
	st, err := pgx.CollectExactlyOneRow(rows, scanStored)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &st, nil
}

func notify(ctx context.Context, tx pgx.Tx, scope string) error {
	// Delivered at commit, so the control plane never reloads before the change is visible.
	// One channel for everything that shapes the edge config, so one LISTEN covers it all.
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, contract.ChannelElectionsChanged, "edge_settings:"+scope)
	return err
}

func limitColumns(l *edgeconfig.Limit) (max, window *int) {
	if l == nil {
		return nil, nil
	}
	return &l.Max, &l.WindowSeconds
}

func scanStored(row pgx.CollectableRow) (Stored, error) {
	var st Stored
	var pvMax, pvWin, ipMax, ipWin *int
	err := row.Scan(&st.Scope, &pvMax, &pvWin, &ipMax, &ipWin, &st.CaptchaMode, &st.TrustedHops, &st.ProxyProtocol,
		&st.UpdatedAt, &st.UpdatedBy)
	if pvMax != nil && pvWin != nil {
		st.PerViewer = &edgeconfig.Limit{Max: *pvMax, WindowSeconds: *pvWin}
	}
	if ipMax != nil && ipWin != nil {
		st.PerIP = &edgeconfig.Limit{Max: *ipMax, WindowSeconds: *ipWin}
	}
	st.UpdatedAt = st.UpdatedAt.UTC()
	return st, err
}
