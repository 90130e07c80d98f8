// Package enqueuefake is an in-memory vote queue for tests: it acknowledges every vote and
// keeps it, in order.
package enqueuefake

import (
	"context"
	"sync"

	"github.com/tvvote/voting/contract"
)

// Queue acknowledges and keeps every vote; safe for concurrent use.
type Queue struct {
	mu   sync.Mutex
	sent []contract.QueuedVote
}

// Enqueue keeps v and acknowledges it.
func (q *Queue) Enqueue(_ context.Context, v contract.QueuedVote) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent = append(q.sent, v)
	return nil
}

// Votes are the votes acknowledged so far, in order.
func (q *Queue) Votes() []contract.QueuedVote {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]contract.QueuedVote(nil), q.sent...)
}
