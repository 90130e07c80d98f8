package dedup

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// Buckets splits each election's viewers into this many Redis Cluster hash slots. A viewer's
// keys (the vote entry, the viewer's rate window) and the share of the election's accepted
// counter they move share the viewer's bucket, so one script handles a vote in one slot; the
// counter, summed over the buckets, is never one hot key.
const Buckets = 256

// Bucket is the viewer's bucket in every election.
func Bucket(viewerID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(viewerID))
	return int(h.Sum32() % Buckets)
}

// tag is the Redis Cluster hash tag of an election's bucket.
func tag(electionID string, bucket int) string {
	return "{" + electionID + ":" + strconv.Itoa(bucket) + "}"
}

// Key is the dedup key of a viewer in an election.
func Key(electionID, viewerID string) string {
	return "vote:" + tag(electionID, Bucket(viewerID)) + ":" + viewerID
}

// viewerWindowKey counts a viewer's vote attempts in an election for the per-viewer limit.
func viewerWindowKey(electionID, viewerID string) string {
	return "rl:v:" + tag(electionID, Bucket(viewerID)) + ":" + viewerID
}

// ipWindowKey counts a client address's vote attempts for the per-IP limit, in a slot of its
// own: an address's attempts span every election and bucket.
func ipWindowKey(ip string) string { return "rl:ip:{" + ip + "}" }

// AcceptedKey is one bucket's share of an election's accepted counter: the viewers whose vote
// became final in the store — the edge confirmed it after SQS acknowledged it, or the processor
// recorded it after PostgreSQL stored it, whichever came first. A key turns final once, so the
// counter moves once per counted vote and the processor can compare it with what it persisted.
func AcceptedKey(electionID string, bucket int) string {
	return "votes:accepted:" + tag(electionID, bucket)
}

// AcceptedKeys are every bucket's share of an election's accepted counter; their sum is the
// counter.
func AcceptedKeys(electionID string) []string {
	keys := make([]string, Buckets)
	for b := range keys {
		keys[b] = AcceptedKey(electionID, b)
	}
	return keys
}

// A dedup key holds one of two kinds of value.
//
// Final, "<voteId>|<acceptedAt>": the vote is in the queue or in PostgreSQL. Only a final
// value makes a 409: it is written after SQS acknowledged the vote (Confirm) or after
// PostgreSQL stored it (Record).
//
// Pending, "~<voteId>|<acceptedAt>|<candidateId>|<deadline ms>|<owner>": an attempt holds the
// viewer while it enqueues. The deadline (Redis clock) is when its owner gives up; the key
// itself expires soon after, so a crash between reservation and acknowledgement locks nobody
// out for longer than the pending TTL. A retry of the same vote after the deadline adopts the
// pending vote id, so a vote whose enqueue ended in doubt is sent again under the same id and
// can never be counted twice.
const pendingMark = "~"

// State says what a dedup key holds.
type State int

const (
	// None: no attempt of this viewer is known.
	None State = iota
	// Pending: an attempt is enqueueing, or ended without knowing whether SQS has it.
	Pending
	// Final: the vote is queued or stored.
	Final
)

// Entry is a parsed dedup value.
type Entry struct {
	State      State
	VoteID     string
	AcceptedAt time.Time
	// CandidateID, Deadline and Owner are set for Pending entries only.
	CandidateID string
	Deadline    time.Time
	Owner       string
}

// FormatValue builds the final dedup value from a vote id and its acceptance time.
func FormatValue(voteID string, acceptedAt time.Time) string {
	return voteID + "|" + FormatTime(acceptedAt)
}

// FormatTime renders an acceptance time as every dedup value and queued vote carries it.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ParseValue splits a final dedup value.
func ParseValue(v string) (voteID string, acceptedAt time.Time, err error) {
	id, at, ok := strings.Cut(v, "|")
	if !ok || strings.HasPrefix(v, pendingMark) {
		return "", time.Time{}, fmt.Errorf("dedup value %s is not a final vote", strconv.Quote(v))
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	return id, t, err
}

// ParseEntry reads any dedup value; "" is None.
func ParseEntry(v string) (Entry, error) {
	if v == "" {
		return Entry{}, nil
	}
	if !strings.HasPrefix(v, pendingMark) {
		id, at, err := ParseValue(v)
		if err != nil {
			return Entry{}, err
		}
		return Entry{State: Final, VoteID: id, AcceptedAt: at}, nil
	}
	parts := strings.SplitN(v[len(pendingMark):], "|", 5)
	if len(parts) != 5 {
		return Entry{}, fmt.Errorf("pending dedup value %s has %d fields, want 5", strconv.Quote(v), len(parts))
	}
	at, err := time.Parse(time.RFC3339Nano, parts[1])
	if err != nil {
		return Entry{}, fmt.Errorf("pending dedup value: %w", err)
	}
	ms, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("pending dedup value: deadline: %w", err)
	}
	return Entry{State: Pending, VoteID: parts[0], AcceptedAt: at, CandidateID: parts[2],
		Deadline: time.UnixMilli(ms), Owner: parts[4]}, nil
}
