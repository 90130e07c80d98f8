package dedup

import (
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/filters/votefilter/captcha"
)

// own gives a test a viewer and an address of its own: rate-limit counters are per viewer
// and per address, across elections, and every test shares one Redis.
func own(t *testing.T) (election, viewer, ip string) {
	t.Helper()
	n := unique(t)
	return "election-" + n, "viewer-" + n, "ip-" + n
}

func TestAcceptedKeyFormat(t *testing.T) {
	if got := AcceptedKey("e1"); got != "votes:accepted:{e1}" {
		t.Errorf("AcceptedKey = %q", got)
	}
}

// The third attempt of a viewer within the window is refused with the rest of the window
// as RetryAfter; duplicates count as attempts, the key keeps the first value.
func TestViewerLimit(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	lim := Limit{Max: 2, Window: 2 * time.Second}
	a := func(value string) Attempt {
		return Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: value, PerViewer: lim}
	}
	if out := admit(t, g, a("vote-1|t")); out.Verdict != Reserved {
		t.Fatalf("first = %+v", out)
	}
	if out := admit(t, g, a("vote-2|t")); out.Verdict != Duplicate {
		t.Fatalf("second = %+v, want Duplicate", out)
	}
	out := admit(t, g, a("vote-3|t"))
	if out.Verdict != ViewerLimited || out.RetryAfter <= 0 || out.RetryAfter > lim.Window {
		t.Fatalf("third = %+v, want ViewerLimited with 0 < RetryAfter ≤ %v", out, lim.Window)
	}
	if out.Existing != "" {
		t.Errorf("a limited outcome names the stored value %q", out.Existing)
	}
	// Limited attempts count too: the counter holds every attempt of the window.
	admit(t, g, a("vote-4|t"))
	if n, _ := client.Get(ctx(t), "rl:v:{"+v+"}").Int(); n != 4 {
		t.Errorf("viewer counter = %d, want 4 (every attempt counts)", n)
	}
	if pttl, _ := client.PTTL(ctx(t), "rl:v:{"+v+"}").Result(); pttl <= 0 || pttl > lim.Window {
		t.Errorf("viewer counter PTTL = %v, want (0, %v]", pttl, lim.Window)
	}
	if got, _ := g.Lookup(ctx(t), e, v); got != "vote-1|t" {
		t.Errorf("key = %q, want vote-1|t", got)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 1 {
		t.Errorf("accepted = %d, want 1", n)
	}
	// Another viewer from the same address is not limited by this viewer's attempts.
	other := Attempt{ElectionID: e, ViewerID: v + "-2", ClientIP: ip, Value: "vote-5|t", PerViewer: lim}
	if out := admit(t, g, other); out.Verdict != Reserved {
		t.Errorf("other viewer = %+v, want Reserved", out)
	}
}

// A window ends: attempts are counted afresh.
func TestLimitWindowEnds(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	a := Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "vote-1|t", PerViewer: Limit{Max: 1, Window: 200 * time.Millisecond}}
	if out := admit(t, g, a); out.Verdict != Reserved {
		t.Fatalf("first = %+v", out)
	}
	if out := admit(t, g, a); out.Verdict != ViewerLimited || out.RetryAfter > 200*time.Millisecond {
		t.Fatalf("second = %+v, want ViewerLimited within 200ms", out)
	}
	time.Sleep(300 * time.Millisecond)
	if out := admit(t, g, a); out.Verdict != Duplicate {
		t.Errorf("after the window = %+v, want Duplicate (not limited)", out)
	}
}

// Attempts from one address count across viewers; the limited viewer gets no key.
func TestIPLimit(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	lim := Limit{Max: 2, Window: 3 * time.Second}
	for i, viewer := range []string{v + "-a", v + "-b"} {
		if out := admit(t, g, Attempt{ElectionID: e, ViewerID: viewer, ClientIP: ip, Value: "x", PerIP: lim}); out.Verdict != Reserved {
			t.Fatalf("viewer %d = %+v", i, out)
		}
	}
	out := admit(t, g, Attempt{ElectionID: e, ViewerID: v + "-c", ClientIP: ip, Value: "x", PerIP: lim})
	if out.Verdict != IPLimited || out.RetryAfter <= 0 || out.RetryAfter > lim.Window {
		t.Fatalf("third viewer = %+v, want IPLimited with 0 < RetryAfter ≤ %v", out, lim.Window)
	}
	if got, _ := g.Lookup(ctx(t), e, v+"-c"); got != "" {
		t.Errorf("the limited viewer holds a key %q", got)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 2 {
		t.Errorf("accepted = %d, want 2", n)
	}
	if out := admit(t, g, Attempt{ElectionID: e, ViewerID: v + "-c", ClientIP: ip + "-other", Value: "x", PerIP: lim}); out.Verdict != Reserved {
		t.Errorf("same viewer, other address = %+v, want Reserved", out)
	}
}

// The address limit is checked first and counts attempts that the viewer limit refuses.
func TestLimitsCountEveryAttempt(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	perViewer, perIP := Limit{Max: 1, Window: 3 * time.Second}, Limit{Max: 3, Window: 3 * time.Second}
	a := Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "x", PerViewer: perViewer, PerIP: perIP}
	want := []Verdict{Reserved, ViewerLimited, ViewerLimited}
	for i, w := range want {
		if out := admit(t, g, a); out.Verdict != w {
			t.Fatalf("attempt %d = %+v, want verdict %d", i, out, w)
		}
	}
	b := a
	b.ViewerID = v + "-fresh"
	if out := admit(t, g, b); out.Verdict != IPLimited {
		t.Errorf("a fresh viewer after 3 attempts from the address = %+v, want IPLimited", out)
	}
}

// Max 0 disables a limit: no counter is even kept.
func TestLimitMaxZeroDisables(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	a := Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "x",
		PerViewer: Limit{Max: 0, Window: time.Second}, PerIP: Limit{Max: 0, Window: time.Second}}
	for i := range 20 {
		out := admit(t, g, a)
		if (i == 0 && out.Verdict != Reserved) || (i > 0 && out.Verdict != Duplicate) {
			t.Fatalf("attempt %d = %+v", i, out)
		}
	}
	if n, _ := client.Exists(ctx(t), "rl:v:{"+v+"}", "rl:ip:{"+ip+"}").Result(); n != 0 {
		t.Errorf("%d rate-limit counters exist with both limits off", n)
	}
}

// A proof-of-work challenge is good for one reservation; its record lives until the
// challenge expires.
func TestPoWReplay(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	id := "pow-" + unique(t)
	exp := time.Now().Add(30 * time.Second)
	first := Attempt{ElectionID: e, ViewerID: v + "-a", ClientIP: ip, Value: "vote-a|t", PoWID: id, PoWExpiry: exp}
	if out := admit(t, g, first); out.Verdict != Reserved {
		t.Fatalf("first use = %+v", out)
	}
	second := first
	second.ViewerID, second.Value = v+"-b", "vote-b|t"
	if out := admit(t, g, second); out.Verdict != Replayed {
		t.Fatalf("second use = %+v, want Replayed", out)
	}
	if got, _ := g.Lookup(ctx(t), e, v+"-b"); got != "" {
		t.Errorf("a replay reserved a key: %q", got)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 1 {
		t.Errorf("accepted = %d, want 1", n)
	}
	pttl, err := client.PTTL(ctx(t), captcha.ReplayKey(id)).Result()
	if err != nil || pttl <= 30*time.Second || pttl > 32*time.Second {
		t.Errorf("replay record %s PTTL = %v (%v), want about 30 s (+2 s)", captcha.ReplayKey(id), pttl, err)
	}
}

// Refusals that happen before the replay record do not burn the challenge: a viewer who is
// limited or has voted can hand it over (it is theirs), and the record is made only with the
// reservation.
func TestPoWNotBurnedByRefusals(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	if out := admit(t, g, Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "vote-1|t"}); out.Verdict != Reserved {
		t.Fatal(out)
	}
	id := "pow-" + unique(t)
	dup := Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "vote-2|t", PoWID: id, PoWExpiry: time.Now().Add(time.Minute)}
	if out := admit(t, g, dup); out.Verdict != Duplicate {
		t.Fatalf("duplicate = %+v", out)
	}
	if n, _ := client.Exists(ctx(t), captcha.ReplayKey(id)).Result(); n != 0 {
		t.Error("a duplicate attempt recorded its challenge")
	}
	fresh := dup
	fresh.ViewerID = v + "-2"
	if out := admit(t, g, fresh); out.Verdict != Reserved {
		t.Errorf("challenge after a duplicate = %+v, want Reserved", out)
	}
}

// A record is made even for a challenge whose expiry has passed (the TTL never goes to 0 or
// below, which Redis would refuse).
func TestPoWPastExpiry(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	a := Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "x", PoWID: "pow-" + unique(t), PoWExpiry: time.Now().Add(-time.Minute)}
	if out, err := g.Admit(ctx(t), a); err != nil || out.Verdict != Reserved {
		t.Fatalf("Admit = %+v, %v", out, err)
	}
}

// captcha.PoW.Verify accepts a challenge through the whole second of its expiry (it compares
// Unix seconds). The replay record must live at least that long, or the challenge can be
// replayed in the rest of that second.
func TestPoWRecordCoversTheExpirySecond(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	// Verify at 'now' accepts a challenge that expires at the start of the current second.
	p, err := captcha.NewPoW([]byte("0123456789abcdef-test"), 1, 0)
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
	a := Attempt{ElectionID: e, ViewerID: v + "-a", ClientIP: ip, Value: "x", PoWID: solved.ID, PoWExpiry: solved.Expiry}
	if out := admit(t, g, a); out.Verdict != Reserved {
		t.Fatal(out)
	}
	time.Sleep(20 * time.Millisecond)
	if _, err := p.Verify(captcha.Solve(c.Challenge, 1), time.Now()); err != nil {
		t.Skip("the second ended during the test")
	}
	a.ViewerID = v + "-b"
	if out := admit(t, g, a); out.Verdict != Replayed {
		t.Errorf("replay within the expiry second = %+v, want Replayed", out)
	}
}

func TestAcceptedCounter(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	for i := range 5 {
		a := Attempt{ElectionID: e, ViewerID: v + "-" + string(rune('a'+i)), ClientIP: ip, Value: "x"}
		if out := admit(t, g, a); out.Verdict != Reserved {
			t.Fatal(out)
		}
		admit(t, g, a) // a duplicate is not counted
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 5 {
		t.Errorf("accepted = %d after 5 reservations and 5 duplicates, want 5", n)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v + "-c", Value: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v + "-c", Value: "x"}); err != nil { // twice: counted down once
		t.Fatal(err)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e)).Int(); n != 4 {
		t.Errorf("accepted = %d after a release (twice), want 4", n)
	}
	if n, _ := client.Get(ctx(t), AcceptedKey(e+"-other")).Int(); n != 0 {
		t.Errorf("another election's counter = %d", n)
	}
}

func TestLookup(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	if got, err := g.Lookup(ctx(t), e, v); err != nil || got != "" {
		t.Errorf("Lookup before a vote = %q, %v; want \"\"", got, err)
	}
	value := FormatValue("01890a5d-ac96-774b-bcce-b302099a8057", time.Date(2026, 1, 15, 21, 0, 0, 1, time.UTC))
	admit(t, g, Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: value})
	if got, err := g.Lookup(ctx(t), e, v); err != nil || got != value {
		t.Errorf("Lookup = %q, %v; want %q", got, err, value)
	}
	if got, _ := g.Lookup(ctx(t), e+"-other", v); got != "" {
		t.Errorf("Lookup in another election = %q", got)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v, Value: value}); err != nil {
		t.Fatal(err)
	}
	if got, err := g.Lookup(ctx(t), e, v); err != nil || got != "" {
		t.Errorf("Lookup after release = %q, %v; want \"\"", got, err)
	}
}

// The scripts survive a SCRIPT FLUSH (a failover to a replica, a restart): EVALSHA falls
// back to EVAL.
func TestScriptCacheFlushed(t *testing.T) {
	g := NewGate(client, time.Hour)
	e, v, ip := own(t)
	admit(t, g, Attempt{ElectionID: e, ViewerID: v, ClientIP: ip, Value: "x"})
	if err := client.ScriptFlush(ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if out := admit(t, g, Attempt{ElectionID: e, ViewerID: v + "-2", ClientIP: ip, Value: "y"}); out.Verdict != Reserved {
		t.Errorf("Admit after SCRIPT FLUSH = %+v", out)
	}
	if err := client.ScriptFlush(ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := g.Release(ctx(t), Attempt{ElectionID: e, ViewerID: v + "-2", Value: "y"}); err != nil {
		t.Errorf("Release after SCRIPT FLUSH: %v", err)
	}
	if got, _ := g.Lookup(ctx(t), e, v+"-2"); got != "" {
		t.Errorf("key after release = %q", got)
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
	for _, bad := range []string{"", "no-separator", "v|", "v|yesterday", "v|2026-01-15"} {
		if _, _, err := ParseValue(bad); err == nil {
			t.Errorf("ParseValue(%q) accepted", bad)
		}
	}
	if !strings.Contains(FormatValue("a", at), "|") {
		t.Error("no separator")
	}
}
