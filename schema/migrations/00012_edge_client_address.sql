-- +goose Up
-- Where the edge takes the client address from, per scope like the limits (NULL inherits):
-- how many proxies in front append to X-Forwarded-For, and whether the public listener
-- requires the PROXY protocol of a network load balancer.
ALTER TABLE edge_settings
    ADD COLUMN trusted_hops   smallint CHECK (trusted_hops BETWEEN 0 AND 5),
    ADD COLUMN proxy_protocol boolean;

-- +goose Down
ALTER TABLE edge_settings DROP COLUMN proxy_protocol, DROP COLUMN trusted_hops;
