-- +goose Up
-- vote_stats gains the candidate, for the statistics' per-candidate regional breakdown, and
-- since_open_ms, for averageVotingTime: the sum, over the row's votes, of the milliseconds from
-- the election's start_date to the vote's accepted_at (0 for a vote accepted before it on a
-- clock running early). Both stay maintained by the processor in the insert transaction.
--
-- The existing rows cannot be split by candidate, so they are rebuilt from votes, which they
-- were always maintained from: per (election, hour, region) the totals stay what they were.
-- SHARE mode on votes holds back every insert (and so every vote_stats update) until this
-- transaction commits, so no vote is counted twice or missed by the rebuild. The processor of
-- the previous version cannot write the new key: migrate with it stopped, then start this
-- version's (the votes wait in the queue meanwhile).
LOCK TABLE votes IN SHARE MODE;
LOCK TABLE vote_stats IN ACCESS EXCLUSIVE MODE;

ALTER TABLE vote_stats
    ADD COLUMN candidate_id uuid,
    ADD COLUMN since_open_ms bigint NOT NULL DEFAULT 0 CHECK (since_open_ms >= 0);

DELETE FROM vote_stats;
INSERT INTO vote_stats (election_id, hour, region, candidate_id, votes, since_open_ms)
SELECT v.election_id, date_trunc('hour', v.accepted_at, 'UTC'), v.region, v.candidate_id, count(*),
       sum(greatest(0, round(extract(epoch FROM v.accepted_at - e.start_date) * 1000)))::bigint
FROM votes v
JOIN elections e ON e.id = v.election_id
GROUP BY 1, 2, 3, 4;

ALTER TABLE vote_stats
    ALTER COLUMN candidate_id SET NOT NULL,
    DROP CONSTRAINT vote_stats_pkey,
    ADD PRIMARY KEY (election_id, hour, region, candidate_id),
    DROP CONSTRAINT vote_stats_election_id_fkey,
    ADD FOREIGN KEY (election_id, candidate_id) REFERENCES candidates (election_id, id);

-- +goose Down
LOCK TABLE votes IN SHARE MODE;
CREATE TABLE vote_stats_by_region AS
SELECT election_id, hour, region, sum(votes)::bigint AS votes FROM vote_stats GROUP BY 1, 2, 3;
DROP TABLE vote_stats;
CREATE TABLE vote_stats (
    election_id uuid NOT NULL REFERENCES elections (id),
    hour        timestamptz NOT NULL,
    region      text NOT NULL,
    votes       bigint NOT NULL DEFAULT 0 CHECK (votes >= 0),
    PRIMARY KEY (election_id, hour, region)
);
INSERT INTO vote_stats SELECT * FROM vote_stats_by_region;
DROP TABLE vote_stats_by_region;
