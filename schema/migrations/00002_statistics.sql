-- +goose Up
-- Turnout is measured against the number of viewers eligible to vote, set per election.
ALTER TABLE elections ADD COLUMN eligible_voters bigint NOT NULL DEFAULT 0 CHECK (eligible_voters >= 0);

-- Votes per hour and region, maintained by the processor in the same transaction as the
-- inserts, so statistics never scan the votes table.
CREATE TABLE vote_stats (
    election_id uuid NOT NULL REFERENCES elections (id),
    hour        timestamptz NOT NULL, -- date_trunc('hour', accepted_at) in UTC
    region      text NOT NULL,
    votes       bigint NOT NULL DEFAULT 0 CHECK (votes >= 0),
    PRIMARY KEY (election_id, hour, region)
);

-- +goose Down
DROP TABLE vote_stats;
ALTER TABLE elections DROP COLUMN eligible_voters;
