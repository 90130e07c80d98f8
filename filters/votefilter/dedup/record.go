package dedup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Stored is a vote PostgreSQL holds.
type Stored struct {
	ElectionID string
	ViewerID   string
	VoteID     string
	AcceptedAt time.Time
}

// Recorded is what Record found for one stored vote.
type Recorded int

const (
	// RecordedNow: the key was missing or pending; it now holds the stored vote.
	RecordedNow Recorded = iota
	// RecordedAlready: the edge had confirmed this very vote.
	RecordedAlready
	// RecordedOther: the key names another vote of the viewer as final. The database is the
	// final barrier, so that other vote was answered 200 and will not be counted.
	RecordedOther
	// RecordFailed: the store could not be asked; the error says why.
	RecordFailed
)

// Record makes the stored votes final in the edge's store, in one pipeline, and says per vote
// what it found. It settles the
// votes whose edge died after SQS acknowledged them but before it confirmed: their pending
// key would otherwise expire and let the viewer vote again. A pending key of another attempt
// is taken over — the database already decided which vote counts, and that attempt will
// learn it when it tries to confirm.
func Record(ctx context.Context, client rueidis.Client, dedupTTL time.Duration, votes []Stored) ([]Recorded, error) {
	if len(votes) == 0 {
		return nil, nil
	}
	execs := make([]rueidis.LuaExec, len(votes))
	for i, v := range votes {
		execs[i] = rueidis.LuaExec{
			Keys: []string{Key(v.ElectionID, v.ViewerID), AcceptedKey(v.ElectionID, Bucket(v.ViewerID))},
			Args: []string{v.VoteID, FormatValue(v.VoteID, v.AcceptedAt), sec(dedupTTL), "1"},
		}
	}
	out := make([]Recorded, len(votes))
	var errs []error
	for i, r := range finalScript.ExecMulti(ctx, client, execs...) {
		res, err := r.ToArray()
		if err == nil {
			var code int64
			code, _, err = verdictOf(res)
			switch code {
			case 0:
				out[i] = RecordedNow
			case 1:
				out[i] = RecordedAlready
			case 2:
				out[i] = RecordedOther
			default:
				err = errors.Join(err, fmt.Errorf("unknown answer %d", code))
			}
		}
		if err != nil {
			out[i] = RecordFailed
			errs = append(errs, fmt.Errorf("record vote %s: %w", votes[i].VoteID, err))
		}
	}
	if len(errs) > 0 {
		// One cause is enough: with Redis away, every vote of the batch fails the same way.
		return out, fmt.Errorf("%d of %d votes not recorded: %w", len(errs), len(votes), errs[0])
	}
	return out, nil
}
