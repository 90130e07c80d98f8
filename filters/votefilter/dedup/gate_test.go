package dedup

import (
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// lim is an attempt of vote n with the given limits.
func lim(e, v, ip string, n int, perViewer, perIP edgeconfig.Limit) Attempt {
	a := vote(e, v, ip, n, "cand-a")
	a.PerViewer, a.PerIP = perViewer, perIP
	return a
}

// The third attempt of a viewer within the window is refused with the rest of the window
// as RetryAfter; duplicates count as attempts, the key keeps the first vote.
func TestViewerLimit(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	l := edgeconfig.Limit{Max: 2, WindowSeconds: 2}
	first := lim(e, v, ip, 1, l, edgeconfig.Limit{})
	if out := reserve(t, g, first); out.Verdict != Reserved {
		t.Fatalf("first = %+v", out)
	}
	confirm(t, g, first)
	if out := reserve(t, g, lim(e, v, ip, 2, l, edgeconfig.Limit{})); out.Verdict != Duplicate {
		t.Fatalf("second = %+v, want Duplicate", out)
	}
	out := reserve(t, g, lim(e, v, ip, 3, l, edgeconfig.Limit{}))
	if out.Verdict != ViewerLimited || out.RetryAfter <= 0 || out.RetryAfter > l.Window() {
		t.Fatalf("third = %+v, want ViewerLimited with 0 < RetryAfter ≤ %v", out, l.Window())
	}
	if out.Existing != "" {
		t.Errorf("a limited outcome names the stored value %q", out.Existing)
	}
	// Limited attempts count too: the counter holds every attempt of the window.
	reserve(t, g, lim(e, v, ip, 4, l, edgeconfig.Limit{}))
	if n := count(t, viewerWindowKey(e, v)); n != 4 {
		t.Errorf("viewer counter = %d, want 4 (every attempt counts)", n)
	}
	if d := pttl(t, viewerWindowKey(e, v)); d <= 0 || d > l.Window() {
		t.Errorf("viewer counter PTTL = %v, want (0, %v]", d, l.Window())
	}
	if got := lookup(t, g, e, v); got.VoteID != "vote-1" || got.State != Final {
		t.Errorf("entry = %+v, want final vote-1", got)
	}
	// Another viewer from the same address is not limited by this viewer's attempts.
	if out := reserve(t, g, lim(e, v+"-2", ip, 5, l, edgeconfig.Limit{})); out.Verdict != Reserved {
		t.Errorf("other viewer = %+v, want Reserved", out)
	}
}

// A recheck of a Busy attempt is the same attempt: it does not count against the limits.
func TestRecheckCountsNothing(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	l := edgeconfig.Limit{Max: 2, WindowSeconds: 10}
	reserve(t, g, lim(e, v, ip, 1, l, l))
	waiting := lim(e, v, ip, 2, l, l)
	if out := reserve(t, g, waiting); out.Verdict != Busy {
		t.Fatalf("second = %+v, want Busy", out)
	}
	for i := range 5 {
		out, err := g.Recheck(ctx(t), waiting)
		if err != nil || out.Verdict != Busy {
			t.Fatalf("recheck %d = %+v, %v; want Busy", i, out, err)
		}
	}
	if n := count(t, viewerWindowKey(e, v)); n != 2 {
		t.Errorf("viewer counter = %d after 2 attempts and 5 rechecks, want 2", n)
	}
	if n := count(t, ipWindowKey(ip)); n != 2 {
		t.Errorf("address counter = %d after 2 attempts and 5 rechecks, want 2", n)
	}
}

// A window ends: attempts are counted afresh.
func TestLimitWindowEnds(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	l := edgeconfig.Limit{Max: 1, WindowSeconds: 1}
	first := lim(e, v, ip, 1, l, edgeconfig.Limit{})
	if out := reserve(t, g, first); out.Verdict != Reserved {
		t.Fatalf("first = %+v", out)
	}
	confirm(t, g, first)
	if out := reserve(t, g, lim(e, v, ip, 2, l, edgeconfig.Limit{})); out.Verdict != ViewerLimited || out.RetryAfter > time.Second {
		t.Fatalf("second = %+v, want ViewerLimited within 1s", out)
	}
	time.Sleep(1100 * time.Millisecond)
	if out := reserve(t, g, lim(e, v, ip, 3, l, edgeconfig.Limit{})); out.Verdict != Duplicate {
		t.Errorf("after the window = %+v, want Duplicate (not limited)", out)
	}
}

// Attempts from one address count across viewers; the limited viewer gets no key.
func TestIPLimit(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	l := edgeconfig.Limit{Max: 2, WindowSeconds: 3}
	for i, viewer := range []string{v + "-a", v + "-b"} {
		if out := reserve(t, g, lim(e, viewer, ip, i, edgeconfig.Limit{}, l)); out.Verdict != Reserved {
			t.Fatalf("viewer %d = %+v", i, out)
		}
	}
	out := reserve(t, g, lim(e, v+"-c", ip, 3, edgeconfig.Limit{}, l))
	if out.Verdict != IPLimited || out.RetryAfter <= 0 || out.RetryAfter > l.Window() {
		t.Fatalf("third viewer = %+v, want IPLimited with 0 < RetryAfter ≤ %v", out, l.Window())
	}
	if got := lookup(t, g, e, v+"-c"); got.State != None {
		t.Errorf("the limited viewer holds an entry %+v", got)
	}
	if out := reserve(t, g, lim(e, v+"-c", ip+"-other", 4, edgeconfig.Limit{}, l)); out.Verdict != Reserved {
		t.Errorf("same viewer, other address = %+v, want Reserved", out)
	}
}

// The address limit is checked first and counts attempts that the viewer limit refuses.
func TestLimitsCountEveryAttempt(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	perViewer, perIP := edgeconfig.Limit{Max: 1, WindowSeconds: 3}, edgeconfig.Limit{Max: 3, WindowSeconds: 3}
	a := lim(e, v, ip, 1, perViewer, perIP)
	want := []Verdict{Reserved, ViewerLimited, ViewerLimited}
	for i, w := range want {
		if out := reserve(t, g, a); out.Verdict != w {
			t.Fatalf("attempt %d = %+v, want verdict %d", i, out, w)
		}
	}
	if out := reserve(t, g, lim(e, v+"-fresh", ip, 2, perViewer, perIP)); out.Verdict != IPLimited {
		t.Errorf("a fresh viewer after 3 attempts from the address = %+v, want IPLimited", out)
	}
}

// Max 0 disables a limit: no counter is even kept.
func TestLimitMaxZeroDisables(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	off := edgeconfig.Limit{Max: 0, WindowSeconds: 1}
	first := lim(e, v, ip, 0, off, off)
	reserve(t, g, first)
	confirm(t, g, first)
	for i := 1; i < 20; i++ {
		if out := reserve(t, g, lim(e, v, ip, i, off, off)); out.Verdict != Duplicate {
			t.Fatalf("attempt %d = %+v", i, out)
		}
	}
	if n, _ := raw(t, "EXISTS", viewerWindowKey(e, v), ipWindowKey(ip)).AsInt64(); n != 0 {
		t.Errorf("%d rate-limit counters exist with both limits off", n)
	}
}

// withPoW is vote n carrying a proof-of-work challenge id.
func withPoW(a Attempt, id string, expiry time.Time) Attempt {
	a.PoWID, a.PoWExpiry = id, expiry
	return a
}

// A proof-of-work challenge is good for one reservation; its record lives until the
// challenge expires.
func TestPoWReplay(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	id := "pow-" + unique(t)
	exp := time.Now().Add(30 * time.Second)
	if out := reserve(t, g, withPoW(vote(e, v+"-a", ip, 1, "c"), id, exp)); out.Verdict != Reserved {
		t.Fatalf("first use = %+v", out)
	}
	if out := reserve(t, g, withPoW(vote(e, v+"-b", ip, 2, "c"), id, exp)); out.Verdict != Replayed {
		t.Fatalf("second use = %+v, want Replayed", out)
	}
	if got := lookup(t, g, e, v+"-b"); got.State != None {
		t.Errorf("a replay reserved an entry: %+v", got)
	}
	if d := pttl(t, captcha.ReplayKey(id)); d <= 30*time.Second || d > 32*time.Second {
		t.Errorf("replay record %s PTTL = %v, want about 30 s (+2 s)", captcha.ReplayKey(id), d)
	}
}

// Refusals that happen before the replay record do not burn the challenge: a viewer who is
// limited or has voted can hand it over (it is theirs), and the record is made only with the
// reservation.
func TestPoWNotBurnedByRefusals(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	first := vote(e, v, ip, 1, "c")
	reserve(t, g, first)
	confirm(t, g, first)
	id := "pow-" + unique(t)
	exp := time.Now().Add(time.Minute)
	if out := reserve(t, g, withPoW(vote(e, v, ip, 2, "c"), id, exp)); out.Verdict != Duplicate {
		t.Fatalf("duplicate = %+v", out)
	}
	if n, _ := raw(t, "EXISTS", captcha.ReplayKey(id)).AsInt64(); n != 0 {
		t.Error("a duplicate attempt recorded its challenge")
	}
	if out := reserve(t, g, withPoW(vote(e, v+"-2", ip, 3, "c"), id, exp)); out.Verdict != Reserved {
		t.Errorf("challenge after a duplicate = %+v, want Reserved", out)
	}
}

// The app's retry of an abandoned vote carries the captcha that vote already used: adopting
// it is not a replay. The challenge stays recorded, so it buys nothing elsewhere.
func TestAdoptionAcceptsTheVotesOwnCaptcha(t *testing.T) {
	g := NewGate(client, Options{AdoptAfter: 50 * time.Millisecond})
	e, v, ip := own(t)
	id := "pow-" + unique(t)
	exp := time.Now().Add(time.Minute)
	first := withPoW(vote(e, v, ip, 1, "c"), id, exp)
	first.Budget = 50 * time.Millisecond
	reserve(t, g, first)
	time.Sleep(150 * time.Millisecond)
	if out := reserve(t, g, withPoW(vote(e, v, ip, 2, "c"), id, exp)); out.Verdict != Adopted {
		t.Fatalf("retry with the vote's own captcha = %+v, want Adopted", out)
	}
	if out := reserve(t, g, withPoW(vote(e, v+"-other", ip, 3, "c"), id, exp)); out.Verdict != Replayed {
		t.Errorf("the same captcha for another viewer = %+v, want Replayed", out)
	}
}

// A released reservation gives its challenge back: the retry of the same body is not a replay.
func TestReleaseGivesTheChallengeBack(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	id := "pow-" + unique(t)
	a := withPoW(vote(e, v, ip, 1, "c"), id, time.Now().Add(time.Minute))
	reserve(t, g, a)
	if err := g.Release(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	if out := reserve(t, g, withPoW(vote(e, v, ip, 2, "c"), id, a.PoWExpiry)); out.Verdict != Reserved {
		t.Errorf("retry with the same challenge after a release = %+v, want Reserved", out)
	}
}

// A record is made even for a challenge whose expiry has passed (the TTL never goes to 0 or
// below, which Redis would refuse).
func TestPoWPastExpiry(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	a := withPoW(vote(e, v, ip, 1, "c"), "pow-"+unique(t), time.Now().Add(-time.Minute))
	if out, err := g.Reserve(ctx(t), a); err != nil || out.Verdict != Reserved {
		t.Fatalf("Reserve = %+v, %v", out, err)
	}
}

// captcha.PoW.Verify accepts a challenge through the whole second of its expiry (it compares
// Unix seconds). The replay record must live at least that long, or the challenge can be
// replayed in the rest of that second.
func TestPoWRecordCoversTheExpirySecond(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	// Verify at 'now' accepts a challenge that expires at the start of the current second.
	p, err := captcha.NewPoW(captcha.StaticKey("0123456789abcdef-test"), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if now.Sub(now.Truncate(time.Second)) > 700*time.Millisecond {
		time.Sleep(time.Until(now.Truncate(time.Second).Add(time.Second + 50*time.Millisecond)))
		now = time.Now()
	}
	c, err := p.Issue(now) // TTL 0: expires at the start of this second
	if err != nil {
		t.Fatal(err)
	}
	solved, err := p.Verify(captcha.Solve(c.Challenge, 1), now)
	if err != nil {
		t.Fatalf("Verify in the expiry second: %v", err)
	}
	if out := reserve(t, g, withPoW(vote(e, v+"-a", ip, 1, "c"), solved.ID, solved.Expiry)); out.Verdict != Reserved {
		t.Fatal(out)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := p.Verify(captcha.Solve(c.Challenge, 1), time.Now()); err != nil {
		t.Skip("the second ended during the test")
	}
	if out := reserve(t, g, withPoW(vote(e, v+"-b", ip, 2, "c"), solved.ID, solved.Expiry)); out.Verdict != Replayed {
		t.Errorf("replay within the expiry second = %+v, want Replayed", out)
	}
}

// Lookup tells the three states apart; the status endpoint reports only a final vote.
func TestLookup(t *testing.T) {
	g := NewGate(client, Options{})
	e, v, ip := own(t)
	if got := lookup(t, g, e, v); got.State != None {
		t.Errorf("Lookup before a vote = %+v", got)
	}
	a := vote(e, v, ip, 1, "cand-a")
	a.AcceptedAt = time.Date(2026, 1, 15, 21, 0, 0, 1, time.UTC)
	reserve(t, g, a)
	if got := lookup(t, g, e, v); got.State != Pending || got.VoteID != "vote-1" || got.Deadline.Before(time.Now()) {
		t.Errorf("Lookup while reserved = %+v", got)
	}
	confirm(t, g, a)
	if got := lookup(t, g, e, v); got.State != Final || got.VoteID != "vote-1" || !got.AcceptedAt.Equal(a.AcceptedAt) {
		t.Errorf("Lookup after Confirm = %+v", got)
	}
	if got := lookup(t, g, e+"-other", v); got.State != None {
		t.Errorf("Lookup in another election = %+v", got)
	}
}

func TestFormatParseValue(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	at := time.Date(2026, 1, 15, 22, 0, 0, 123456789, paris)
	v := FormatValue("01890a5d-ac96-774b-bcce-b302099a8057", at)
	if v != "01890a5d-ac96-774b-bcce-b302099a8057|2026-01-15T21:00:00.123456789Z" {
		t.Errorf("FormatValue = %q", v)
	}
	id, got, err := ParseValue(v)
	if err != nil || id != "01890a5d-ac96-774b-bcce-b302099a8057" || !got.Equal(at) {
		t.Errorf("ParseValue = %q, %v, %v", id, got, err)
	}
	whole := FormatValue("v", time.Date(2026, 1, 15, 21, 0, 0, 0, time.UTC))
	if _, got, err := ParseValue(whole); err != nil || !got.Equal(time.Date(2026, 1, 15, 21, 0, 0, 0, time.UTC)) {
		t.Errorf("whole seconds: %q → %v, %v", whole, got, err)
	}
	for _, bad := range []string{"", "no-separator", "v|", "v|yesterday", "v|2026-01-15", "~v|2026-01-15T21:00:00Z|c|1|o"} {
		if _, _, err := ParseValue(bad); err == nil {
			t.Errorf("ParseValue(%q) accepted", bad)
		}
	}
	if !strings.Contains(FormatValue("a", at), "|") {
		t.Error("no separator")
	}
}

func TestParseEntry(t *testing.T) {
	at := time.Date(2026, 12, 2, 20, 0, 0, 5, time.UTC)
	pending := "~vote-1|" + FormatTime(at) + "|cand-a|1764705600123|owner|with|bars"
	e, err := ParseEntry(pending)
	if err != nil || e.State != Pending || e.VoteID != "vote-1" || !e.AcceptedAt.Equal(at) || e.CandidateID != "cand-a" ||
		e.Deadline.UnixMilli() != 1764705600123 || e.Owner != "owner|with|bars" {
		t.Errorf("ParseEntry(pending) = %+v, %v", e, err)
	}
	if e, err := ParseEntry(FormatValue("vote-2", at)); err != nil || e.State != Final || e.VoteID != "vote-2" {
		t.Errorf("ParseEntry(final) = %+v, %v", e, err)
	}
	if e, err := ParseEntry(""); err != nil || e.State != None {
		t.Errorf("ParseEntry(\"\") = %+v, %v", e, err)
	}
	for _, bad := range []string{"~v|x", "~v|" + FormatTime(at) + "|c|soon|o", "~v|yesterday|c|1|o", "v|"} {
		if _, err := ParseEntry(bad); err == nil {
			t.Errorf("ParseEntry(%q) accepted", bad)
		}
	}
}
