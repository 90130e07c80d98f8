-- +goose Up
-- One rule for a rate limit everywhere (edgeconfig.Limit.Validate): max >= 0, a window of at
-- most a day, of at least a second when the limit is on; a disabled limit (max 0) needs none.
ALTER TABLE edge_settings
    DROP CONSTRAINT edge_settings_per_viewer_window_seconds_check,
    DROP CONSTRAINT edge_settings_per_ip_window_seconds_check,
    ADD CONSTRAINT edge_settings_per_viewer_window_seconds_check
        CHECK (per_viewer_window_seconds BETWEEN 0 AND 86400 AND (per_viewer_window_seconds > 0 OR per_viewer_max = 0)),
    ADD CONSTRAINT edge_settings_per_ip_window_seconds_check
        CHECK (per_ip_window_seconds BETWEEN 0 AND 86400 AND (per_ip_window_seconds > 0 OR per_ip_max = 0));

-- +goose Down
ALTER TABLE edge_settings
    DROP CONSTRAINT edge_settings_per_viewer_window_seconds_check,
    DROP CONSTRAINT edge_settings_per_ip_window_seconds_check;
UPDATE edge_settings SET per_viewer_window_seconds = 1 WHERE per_viewer_window_seconds = 0;
UPDATE edge_settings SET per_ip_window_seconds = 1 WHERE per_ip_window_seconds = 0;
ALTER TABLE edge_settings
    ADD CONSTRAINT edge_settings_per_viewer_window_seconds_check CHECK (per_viewer_window_seconds BETWEEN 1 AND 86400),
    ADD CONSTRAINT edge_settings_per_ip_window_seconds_check CHECK (per_ip_window_seconds BETWEEN 1 AND 86400);
