-- +goose Up
CREATE TABLE elections (
    id          uuid PRIMARY KEY,
    title       text NOT NULL CHECK (char_length(title) BETWEEN 3 AND 200),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    status      text NOT NULL CHECK (status IN ('DRAFT', 'SCHEDULED', 'ACTIVE', 'CLOSED', 'CANCELLED')),
    start_date  timestamptz NOT NULL,
    end_date    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (end_date > start_date)
);

CREATE TABLE candidates (
    id          uuid PRIMARY KEY,
    election_id uuid NOT NULL REFERENCES elections (id),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 3 AND 200),
    party       text NOT NULL DEFAULT '' CHECK (char_length(party) <= 100),
    photo_url   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Target of the composite foreign keys below: a vote's candidate must belong to its election.
    UNIQUE (election_id, id)
);

-- One row per admitted vote. UNIQUE (election_id, user_id) is the final one-vote barrier behind
-- the edge's Redis SET NX.
CREATE TABLE votes (
    id           uuid PRIMARY KEY,
    election_id  uuid NOT NULL,
    candidate_id uuid NOT NULL,
    user_id      text NOT NULL,
    region       text NOT NULL DEFAULT '',
    request_id   text NOT NULL DEFAULT '',
    accepted_at  timestamptz NOT NULL,
    persisted_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (election_id, user_id),
    FOREIGN KEY (election_id, candidate_id) REFERENCES candidates (election_id, id)
);

-- Maintained in the same transaction as the inserts, so results never scan votes.
CREATE TABLE vote_counts (
    election_id  uuid NOT NULL,
    candidate_id uuid NOT NULL,
    votes        bigint NOT NULL DEFAULT 0 CHECK (votes >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (election_id, candidate_id),
    FOREIGN KEY (election_id, candidate_id) REFERENCES candidates (election_id, id)
);

-- +goose Down
DROP TABLE vote_counts;
DROP TABLE votes;
DROP TABLE candidates;
DROP TABLE elections;
