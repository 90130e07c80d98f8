package results

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/tvvote/voting/contract"
)

// Stream message types (contract: ResultsStreamMessage.type).
const (
	MsgVoteUpdate   = "VOTE_UPDATE"
	MsgStatusChange = "STATUS_CHANGE"
	MsgError        = "ERROR"
	MsgHeartbeat    = "HEARTBEAT"
)

// StreamMessage is the contract's ResultsStreamMessage.
type StreamMessage struct {
	Type       string            `json:"type"`
	ElectionID string            `json:"electionId"`
	Timestamp  time.Time         `json:"timestamp"`
	Candidates []CandidateUpdate `json:"candidates,omitempty"`
	TotalVotes *int64            `json:"totalVotes,omitempty"`
	NewStatus  string            `json:"newStatus,omitempty"`
	Message    string            `json:"message,omitempty"`
}

// CandidateUpdate is one candidate of a VOTE_UPDATE: its count and the change since the
// previous VOTE_UPDATE of this stream.
type CandidateUpdate struct {
	CandidateID string `json:"candidateId"`
	Votes       int64  `json:"votes"`
	Delta       int64  `json:"delta"`
}

// statusMessage is the human-readable text of a STATUS_CHANGE, for screens that show it as is.
func statusMessage(status string) string {
	switch status {
	case contract.StatusActive:
		return "Voting is open."
	case contract.StatusClosed:
		return "Voting has ended. Final results being calculated."
	case contract.StatusCancelled:
		return "This vote has been cancelled."
	case contract.StatusScheduled:
		return "Voting has not started yet."
	default:
		return "Results are not available."
	}
}

// clientQueue is how many messages a client may lag behind before it is dropped: at one update
// per second plus heartbeats, about 8 s of backlog.
const clientQueue = 8

// closeReason tells a dropped client's writer which close frame to send.
type closeReason int

const (
	reasonNone      closeReason = iota
	reasonSlow                  // fell clientQueue messages behind
	reasonGoingAway             // worker shutting down
)

// outMsg is one encoded message, shared by every client of the broadcast.
type outMsg struct {
	data []byte
	// since is when the worker learned of the oldest change in the message: the start of the
	// broadcast-lag measurement.
	since time.Time
}

// client is one WebSocket subscriber. The broadcaster only ever does non-blocking sends on
// send, so one slow reader can never delay the others.
type client struct {
	send   chan *outMsg
	reason closeReason // set before send is closed
}

func newClient() *client { return &client{send: make(chan *outMsg, clientQueue)} }

// broadcaster fans one election's changes out to its clients: status changes at once, vote
// updates only when a count changed and never two within streamInterval. A change goes out at
// once when the last VOTE_UPDATE is at least an interval old, else when it becomes so, with
// the counts of that moment: it waits at most one interval. It has no goroutine of its own:
// the hub calls update with every new snapshot, a timer sends what the interval held back.
type broadcaster struct {
	h *Hub
	e *entry

	mu         sync.Mutex
	clients    map[*client]struct{}
	sentVotes  map[string]int64 // counts as of the last VOTE_UPDATE (the base of the deltas)
	sentOrder  []string         // candidate ids in snapshot order
	sentStatus string
	pending    time.Time // observed time of the oldest change not yet sent
	lastSend   time.Time
	timer      timer // armed while a change waits for the interval to pass
}

func newBroadcaster(h *Hub, e *entry) *broadcaster {
	return &broadcaster{h: h, e: e, clients: map[*client]struct{}{}, sentVotes: map[string]int64{}}
}

// baseline sets what clients are told first, from the entry's first load.
func (b *broadcaster) baseline(s *snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setSentLocked(s)
	b.sentStatus = s.counts.Status
}

func (b *broadcaster) setSentLocked(s *snapshot) {
	clear(b.sentVotes)
	b.sentOrder = b.sentOrder[:0]
	for _, c := range s.counts.Candidates {
		b.sentVotes[c.ID] = c.Votes
		b.sentOrder = append(b.sentOrder, c.ID)
	}
}

func (b *broadcaster) votesDifferLocked(s *snapshot) bool {
	if len(s.counts.Candidates) != len(b.sentVotes) {
		return true
	}
	for _, c := range s.counts.Candidates {
		if v, ok := b.sentVotes[c.ID]; !ok || v != c.Votes {
			return true
		}
	}
	return false
}

// update is called by the hub with every new snapshot, in order.
func (b *broadcaster) update(s *snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.h.now()
	if s.counts.Status != b.sentStatus {
		b.sentStatus = s.counts.Status
		if len(b.clients) > 0 {
			b.fanoutLocked(b.encode(StreamMessage{Type: MsgStatusChange, ElectionID: b.e.id, Timestamp: now,
				NewStatus: s.counts.Status, Message: statusMessage(s.counts.Status)}), s.observed)
			b.h.metrics.broadcasts.WithLabelValues(MsgStatusChange).Inc()
		}
	}
	if len(b.clients) == 0 {
		// Nobody to tell: the next subscriber starts from here.
		b.setSentLocked(s)
		b.pending = time.Time{}
		return
	}
	if !b.votesDifferLocked(s) {
		return
	}
	if b.pending.IsZero() {
		b.pending = s.observed
	}
	b.scheduleLocked(s, now)
}

// scheduleLocked sends s now if the last VOTE_UPDATE is at least an interval old, else makes
// sure the newest counts go out when it is. It is the only way to sendVotesLocked, so no path
// can send two within an interval. While the timer is armed nothing else sends, not even a
// change arriving after the deadline before the timer ran: the timer sends it.
func (b *broadcaster) scheduleLocked(s *snapshot, now time.Time) {
	if b.timer != nil {
		return
	}
	if wait := b.h.streamInterval - now.Sub(b.lastSend); wait > 0 {
		b.timer = b.h.clock.AfterFunc(wait, b.flush)
		return
	}
	b.sendVotesLocked(s, now)
}

// flush sends the newest counts once the throttle interval has passed.
func (b *broadcaster) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.timer = nil
	s := b.e.snap.Load()
	if s == nil || len(b.clients) == 0 || !b.votesDifferLocked(s) {
		b.pending = time.Time{}
		return
	}
	b.scheduleLocked(s, b.h.now())
}

func (b *broadcaster) sendVotesLocked(s *snapshot, now time.Time) {
	msg := StreamMessage{Type: MsgVoteUpdate, ElectionID: b.e.id, Timestamp: now, TotalVotes: &s.total,
		Candidates: make([]CandidateUpdate, 0, len(s.counts.Candidates))}
	for _, c := range s.counts.Candidates {
		msg.Candidates = append(msg.Candidates, CandidateUpdate{CandidateID: c.ID, Votes: c.Votes, Delta: c.Votes - b.sentVotes[c.ID]})
	}
	since := b.pending
	if since.IsZero() {
		since = s.observed
	}
	b.fanoutLocked(b.encode(msg), since)
	b.setSentLocked(s)
	b.pending = time.Time{}
	b.lastSend = now
	b.h.metrics.broadcasts.WithLabelValues(MsgVoteUpdate).Inc()
	if nc := s.newestCount(); !nc.IsZero() {
		// Processor transaction start → message handed to the clients' queues.
		b.h.metrics.updateAge.Observe(now.Sub(nc).Seconds())
	}
}

// heartbeat sends HEARTBEAT to every client.
func (b *broadcaster) heartbeat() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.clients) == 0 {
		return
	}
	now := b.h.now()
	b.fanoutLocked(b.encode(StreamMessage{Type: MsgHeartbeat, ElectionID: b.e.id, Timestamp: now}), now)
	b.h.metrics.broadcasts.WithLabelValues(MsgHeartbeat).Inc()
}

// add subscribes c and queues its first message: the counts the deltas of the next update
// will be relative to (delta 0), so a client's view is consistent from the first message.
func (b *broadcaster) add(c *client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.h.now()
	msg := StreamMessage{Type: MsgVoteUpdate, ElectionID: b.e.id, Timestamp: now,
		Candidates: make([]CandidateUpdate, 0, len(b.sentOrder)), Message: "Current results."}
	var total int64
	for _, id := range b.sentOrder {
		v := b.sentVotes[id]
		total += v
		msg.Candidates = append(msg.Candidates, CandidateUpdate{CandidateID: id, Votes: v})
	}
	msg.TotalVotes = &total
	c.send <- &outMsg{data: b.encode(msg), since: now} // empty queue: never blocks
	b.clients[c] = struct{}{}
	b.h.metrics.streams.Inc()
	// A change may be waiting for this first subscriber (the hub stored a snapshot it has not
	// handed to update yet): make sure it goes out.
	if s := b.e.snap.Load(); s != nil && b.votesDifferLocked(s) {
		if b.pending.IsZero() {
			b.pending = s.observed
		}
		b.scheduleLocked(s, now)
	}
}

// remove unsubscribes a client that is leaving on its own.
func (b *broadcaster) remove(c *client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.clients[c]; ok {
		delete(b.clients, c)
		b.h.metrics.streams.Dec()
	}
}

func (b *broadcaster) clientCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.clients)
}

func (b *broadcaster) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.clients {
		b.dropLocked(c, reasonGoingAway)
	}
}

func (b *broadcaster) fanoutLocked(data []byte, since time.Time) {
	if data == nil {
		return
	}
	m := &outMsg{data: data, since: since}
	for c := range b.clients {
		select {
		case c.send <- m:
		default:
			b.dropLocked(c, reasonSlow)
			b.h.metrics.dropped.WithLabelValues("slow").Inc()
		}
	}
}

func (b *broadcaster) dropLocked(c *client, r closeReason) {
	delete(b.clients, c)
	b.h.metrics.streams.Dec()
	c.reason = r
	close(c.send)
}

func (b *broadcaster) encode(m StreamMessage) []byte {
	data, err := json.Marshal(m)
	if err != nil { // cannot happen for these types; never send a broken frame
		b.h.log.Error("encode stream message", "err", err)
		return nil
	}
	return data
}
