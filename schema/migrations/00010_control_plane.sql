-- +goose Up
-- The control plane's own tables: the admin audit trail, the live edge settings and the
-- counter behind xDS versions.

-- Every admin or scheduler change, written in the same transaction as the change, so the trail
-- can never miss a change that happened nor show one that was rolled back.
CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- The token's sub, or "scheduler" for the control plane's own window transitions.
    actor       text NOT NULL,
    -- e.g. election.create, election.status, candidate.delete, edge_settings.put
    action      text NOT NULL,
    entity      text NOT NULL CHECK (entity IN ('election', 'candidate', 'edge_settings')),
    entity_id   text NOT NULL,
    election_id uuid,
    before      jsonb,
    after       jsonb,
    -- The request's x-request-id, to join the trail with Envoy's and the control plane's logs.
    trace_id    text NOT NULL DEFAULT ''
);
CREATE INDEX admin_audit_election ON admin_audit (election_id, at);
CREATE INDEX admin_audit_at ON admin_audit (at);

-- Live tuning of the edge. scope '*' applies to every region; any other scope is one region and
-- wins over '*'. A NULL column inherits (region → '*' → the control plane's environment).
CREATE TABLE edge_settings (
    scope                     text PRIMARY KEY CHECK (scope ~ '^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,62})$'),
    per_viewer_max            integer CHECK (per_viewer_max >= 0),
    per_viewer_window_seconds integer CHECK (per_viewer_window_seconds BETWEEN 1 AND 86400),
    per_ip_max                integer CHECK (per_ip_max >= 0),
    per_ip_window_seconds     integer CHECK (per_ip_window_seconds BETWEEN 1 AND 86400),
    captcha_mode              text CHECK (captcha_mode IN ('pow', 'siteverify', 'off')),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    updated_by                text NOT NULL,
    -- A limit is a pair: both set or both inherited.
    CHECK ((per_viewer_max IS NULL) = (per_viewer_window_seconds IS NULL)),
    CHECK ((per_ip_max IS NULL) = (per_ip_window_seconds IS NULL))
);

-- xDS versions come from here so they keep increasing across control plane restarts (and
-- would across replicas).
CREATE SEQUENCE xds_config_version;

-- The scheduler's two questions: what opens next, what closes next.
CREATE INDEX elections_scheduled_start ON elections (start_date) WHERE status = 'SCHEDULED';
CREATE INDEX elections_active_end ON elections (end_date) WHERE status = 'ACTIVE';
-- The admin list: filtered by status, newest first.
CREATE INDEX elections_status_created ON elections (status, created_at DESC, id);

-- +goose Down
DROP INDEX elections_status_created;
DROP INDEX elections_active_end;
DROP INDEX elections_scheduled_start;
DROP SEQUENCE xds_config_version;
DROP TABLE edge_settings;
DROP TABLE admin_audit;
