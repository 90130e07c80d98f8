package processor

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/tvvote/voting/contract"
)

// vote is one valid queued vote, normalised for the votes row.
type vote struct {
	ID          string // canonical lower-case uuid
	ElectionID  string
	CandidateID string
	UserID      string
	Region      string
	HomeRegion  string // never empty: the vote's Region when the edge did not name another
	RequestID   string
	AcceptedAt  time.Time
}

// home is the region whose store and queue took the vote.
func (v vote) home() string {
	if v.HomeRegion == "" {
		return v.Region
	}
	return v.HomeRegion
}

// Limits on free-text fields: a body that breaks them did not come from our edge filter.
const (
	maxUserIDLen    = 256
	maxRegionLen    = 64
	maxRequestIDLen = 128
)

// errPoison marks a message that can never be persisted, however often it is retried.
var errPoison = errors.New("poison message")

// parseVote turns one SQS message into a vote. Errors wrap errPoison: the message is left in
// the queue so SQS redrive moves it to the dead-letter queue for inspection.
func parseVote(msg types.Message) (vote, error) {
	if msg.Body == nil {
		return vote{}, fmt.Errorf("%w: empty body", errPoison)
	}
	var q contract.QueuedVote
	if err := json.Unmarshal([]byte(*msg.Body), &q); err != nil {
		return vote{}, fmt.Errorf("%w: body is not a QueuedVote: %v", errPoison, err)
	}
	v := vote{
		UserID:     q.UserID,
		Region:     q.Region,
		HomeRegion: q.HomeRegion,
		RequestID:  q.RequestID,
		AcceptedAt: q.AcceptedAt,
	}
	var err error
	if v.ID, err = canonicalUUID("voteId", q.VoteID); err != nil {
		return vote{}, err
	}
	if v.ElectionID, err = canonicalUUID("electionId", q.ElectionID); err != nil {
		return vote{}, err
	}
	if v.CandidateID, err = canonicalUUID("candidateId", q.CandidateID); err != nil {
		return vote{}, err
	}
	// The message attribute is what Envoy stamped on the request; the body copy is a fallback
	// for producers that do not set attributes.
	if rid := stringAttr(msg, contract.AttrRequestID); rid != "" {
		v.RequestID = rid
	}
	if v.Region == "" {
		v.Region = stringAttr(msg, contract.AttrRegion)
	}
	if v.HomeRegion == "" {
		v.HomeRegion = v.Region
	}
	switch {
	case v.UserID == "" || len(v.UserID) > maxUserIDLen || !storableText(v.UserID):
		return vote{}, fmt.Errorf("%w: userId missing, too long, not UTF-8 or holds NUL", errPoison)
	case len(v.Region) > maxRegionLen || !storableText(v.Region):
		return vote{}, fmt.Errorf("%w: region too long, not UTF-8 or holds NUL", errPoison)
	case len(v.HomeRegion) > maxRegionLen || !storableText(v.HomeRegion):
		return vote{}, fmt.Errorf("%w: homeRegion too long, not UTF-8 or holds NUL", errPoison)
	case len(v.RequestID) > maxRequestIDLen || !storableText(v.RequestID):
		return vote{}, fmt.Errorf("%w: requestId too long, not UTF-8 or holds NUL", errPoison)
	case v.AcceptedAt.IsZero():
		return vote{}, fmt.Errorf("%w: acceptedAt missing", errPoison)
	}
	return v, nil
}

// storableText is what a PostgreSQL text column takes: valid UTF-8 without NUL bytes (JSON may
// carry "\u0000"). Checked here because PostgreSQL would reject the whole batch otherwise.
func storableText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// canonicalUUID is contract.CanonicalUUID with the field named in its poison error.
func canonicalUUID(field, s string) (string, error) {
	u, ok := contract.CanonicalUUID(s)
	if !ok {
		return "", fmt.Errorf("%w: %s %q is not a uuid", errPoison, field, s)
	}
	return u, nil
}

func stringAttr(msg types.Message, name string) string {
	if a, ok := msg.MessageAttributes[name]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// sentAt is when SQS accepted the message (system attribute SentTimestamp, epoch ms); zero if
// the attribute was not requested or is malformed.
func sentAt(msg types.Message) time.Time {
	ms, err := strconv.ParseInt(msg.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// receiveCount is ApproximateReceiveCount as a string, for logs.
func receiveCount(msg types.Message) string {
	return msg.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)]
}
