-- +goose Up
-- A multi-region fleet admits each viewer's vote in the viewer's home region (its store and
-- queue), whichever region's edge the viewer reached. votes.region stays the serving edge;
-- home_region is the store that took the vote, which the reconciliation compares with that
-- store's counter. Rows from before have none: their home was their region. The processor of
-- the previous version cannot write the new vote_stats key: migrate with it stopped, then
-- start this version's (the votes wait in the queue meanwhile).
ALTER TABLE votes ADD COLUMN home_region text;

-- vote_stats by serving region and home region, and the second votes PostgreSQL refused
-- (duplicates: a viewer admitted twice, which a sound fleet never does) beside the votes.
LOCK TABLE vote_stats IN ACCESS EXCLUSIVE MODE;
ALTER TABLE vote_stats ADD COLUMN home_region text;
UPDATE vote_stats SET home_region = region;
ALTER TABLE vote_stats
    ALTER COLUMN home_region SET NOT NULL,
    ADD COLUMN duplicates bigint NOT NULL DEFAULT 0 CHECK (duplicates >= 0),
    DROP CONSTRAINT vote_stats_pkey,
    ADD PRIMARY KEY (election_id, hour, region, home_region, candidate_id);

-- +goose Down
LOCK TABLE vote_stats IN ACCESS EXCLUSIVE MODE;
CREATE TEMP TABLE vote_stats_folded AS
SELECT election_id, hour, region, candidate_id, sum(votes)::bigint AS votes, sum(since_open_ms)::bigint AS since_open_ms
FROM vote_stats GROUP BY 1, 2, 3, 4;
DELETE FROM vote_stats;
ALTER TABLE vote_stats
    DROP CONSTRAINT vote_stats_pkey,
    DROP COLUMN duplicates,
    DROP COLUMN home_region,
    ADD PRIMARY KEY (election_id, hour, region, candidate_id);
INSERT INTO vote_stats (election_id, hour, region, candidate_id, votes, since_open_ms)
SELECT election_id, hour, region, candidate_id, votes, since_open_ms FROM vote_stats_folded;
DROP TABLE vote_stats_folded;
ALTER TABLE votes DROP COLUMN home_region;
