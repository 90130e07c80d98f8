// Package regions proves the cross-region promise on a two-region stack: two Envoys labelled
// with their regions, each with its own Redis, queue and dead-letter queue and processor, one
// control plane, one PostgreSQL. A viewer who votes in both regions at once gets one 200, and
// it is the stored vote.
package regions

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/homeregion"
)

var regions = []string{"eu-west-1", "us-east-1"}

// viewers vote; each votes in both regions at the same moment, for another candidate in each.
const viewers = 1000

type answer struct {
	status  int // the final answer
	voteID  string
	retries int // 503s before it
}

type viewer struct {
	sub, token string
	home       string
	answers    [2]answer // by edge: 0 eu-west-1, 1 us-east-1
}

func TestAViewerVotingInBothRegionsIsCountedOnceAndToldTheTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a two-region stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Regions: regions, CaptchaMode: "off",
		ControlPlaneEnv: []string{"XDS_RATE_PER_VIEWER=0/1s", "XDS_RATE_PER_IP=0/1s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if len(s.Peers) != 1 || s.Region != regions[0] {
		t.Fatalf("stack regions: %s and %d peers", s.Region, len(s.Peers))
	}
	e, err := s.SeedElection(ctx, "Two regions", time.Hour, "Alice", "Bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitEnvoyKnows(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	edges := [2]string{s.EnvoyURL(), s.Peers[0].URL()}

	// A third of the viewers claim the region the hash would not give them (the identity
	// provider's claim wins), a third claim the hashed one, a third claim nothing (hashed).
	vs := make([]*viewer, viewers)
	for i := range vs {
		v := &viewer{sub: fmt.Sprintf("auth0|roaming-%d-%d", time.Now().UnixNano(), i)}
		hashed, claimed := homeregion.Of(v.sub, regions), ""
		switch i % 3 {
		case 0:
			claimed = regions[0]
			if hashed == regions[0] {
				claimed = regions[1]
			}
		case 1:
			claimed = hashed
		}
		v.home = cmp.Or(claimed, hashed)
		if v.token, err = s.TokenHomed(ctx, v.sub, false, claimed); err != nil {
			t.Fatal(err)
		}
		vs[i] = v
	}
	admin, err := s.Token(ctx, "auth0|regions-admin", true)
	if err != nil {
		t.Fatal(err)
	}

	// Both votes of a viewer leave together; 16 viewers at a time.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, v := range vs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			start := make(chan struct{})
			var pair sync.WaitGroup
			for i := range edges {
				pair.Go(func() {
					<-start
					v.answers[i] = castVote(t, client, edges[i], v.token, e.ID, e.Candidates[i].ID)
				})
			}
			close(start)
			pair.Wait()
		})
	}
	wg.Wait()

	// Exactly one 200 per viewer; the other attempt learns the vote exists (409); never a second
	// 200. A 503 is retried as an app does, so only final answers count.
	byStatus := map[string]int{}
	retried := 0
	winner := map[string]int{} // viewer → the edge that answered 200
	for _, v := range vs {
		ok := 0
		for i, a := range v.answers {
			byStatus[strconv.Itoa(a.status)]++
			retried += a.retries
			if a.status == http.StatusOK {
				ok++
				winner[v.sub] = i
			} else if a.status != http.StatusConflict {
				t.Errorf("%s at %s: status %d", v.sub, regions[i], a.status)
			}
		}
		if ok != 1 {
			t.Fatalf("%s: %d answers of 200 across the two regions (%+v), want exactly 1", v.sub, ok, v.answers)
		}
	}
	t.Logf("final answers over %d viewers × 2 regions: %v, after %d answers of 503", viewers, byStatus, retried)

	// The status endpoint tells the truth in both regions, right after the 200: the vote of the
	// viewer's home store, to the viewer, and to an admin, who cannot know the viewer's claim.
	for n, v := range vs {
		want := v.answers[winner[v.sub]].voteID
		for i := range edges {
			if got := voteStatus(t, client, edges[i], v.token, e.ID, v.sub); got != want {
				t.Fatalf("%s: status at %s says vote %q, the 200 said %q", v.sub, regions[i], got, want)
			}
			if n%10 == 0 {
				if got := voteStatus(t, client, edges[i], admin, e.ID, v.sub); got != want {
					t.Fatalf("%s: status for an admin at %s says vote %q, the 200 said %q", v.sub, regions[i], got, want)
				}
			}
		}
	}

	// PostgreSQL: one row per viewer, the vote of the 200, stored with the region that served it
	// and the viewer's home region, brought by the home region's queue and processor.
	conn, err := pgx.Connect(ctx, s.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(90 * time.Second)
	var rows int
	for {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM votes WHERE election_id = $1`, e.ID).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows >= viewers || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if rows != viewers {
		t.Fatalf("%d rows for %d viewers", rows, viewers)
	}
	stored := map[string][3]string{}
	r, err := conn.Query(ctx, `SELECT user_id, id::text, region, home_region FROM votes WHERE election_id = $1`, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var user, id, region, home string
		if err := r.Scan(&user, &id, &region, &home); err != nil {
			t.Fatal(err)
		}
		stored[user] = [3]string{id, region, home}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	homes := map[string]int{}
	for _, v := range vs {
		w := winner[v.sub]
		got, want := stored[v.sub], [3]string{v.answers[w].voteID, regions[w], v.home}
		if got != want {
			t.Fatalf("%s: stored (vote, region, home) %v, the 200 was %v", v.sub, got, want)
		}
		homes[v.home]++
	}
	if homes[regions[0]] == 0 || homes[regions[1]] == 0 {
		t.Fatalf("homes %v: both regions must be home to some viewers", homes)
	}

	// Per-region figures: vote_stats by home region with no duplicates, and the edges' counters
	// by home region add up to the same admissions.
	r, err = conn.Query(ctx, `SELECT home_region, sum(votes)::bigint, sum(duplicates)::bigint FROM vote_stats
		WHERE election_id = $1 GROUP BY 1`, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var home string
		var votes, dups int64
		if err := r.Scan(&home, &votes, &dups); err != nil {
			t.Fatal(err)
		}
		if int(votes) != homes[home] || dups != 0 {
			t.Errorf("vote_stats home %s: %d votes, %d duplicates; want %d and 0", home, votes, dups, homes[home])
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	accepted, duplicates := map[string]int{}, 0
	for _, admin := range []string{fmt.Sprintf("http://127.0.0.1:%d", s.Ports.EnvoyAdmin), s.Peers[0].AdminURL()} {
		for _, c := range edgeCounters(t, admin) {
			switch c.outcome {
			case "accepted":
				accepted[c.home] += c.n
			case "duplicate":
				duplicates += c.n
			}
		}
	}
	for _, home := range regions {
		if accepted[home] != homes[home] {
			t.Errorf("edge counters: %d accepted with home %s, want %d", accepted[home], home, homes[home])
		}
	}
	if duplicates != byStatus["409"] {
		t.Errorf("edge counters: %d duplicates, the viewers got %d answers of 409", duplicates, byStatus["409"])
	}
	// Each home region's votes came by its own queue: each region's processor persisted exactly
	// the votes of the viewers homed there.
	for i, url := range []string{s.ProcessorMetricsURL(), s.Peers[0].ProcessorMetricsURL()} {
		if n := persisted(t, url); n != homes[regions[i]] {
			t.Errorf("processor of %s persisted %d votes, want the %d of its home viewers", regions[i], n, homes[regions[i]])
		}
	}
	t.Logf("viewers by home region: %v", homes)
}

// persisted reads voting_processor_votes_persisted_total from a processor's /metrics.
func persisted(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "voting_processor_votes_persisted_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(f)
		}
	}
	t.Fatalf("%s has no voting_processor_votes_persisted_total", url)
	return 0
}

// castVote sends one vote and, as a viewer's app does, sends it again while the edge answers
// 503 (a vote in doubt: the local queue stalled, another attempt in flight), until a final
// answer or 30 s; retries counts the 503s.
func castVote(t *testing.T, c *http.Client, edge, token, electionID, candidateID string) answer {
	body, _ := json.Marshal(contract.VoteRequest{ElectionID: electionID, CandidateID: candidateID, CaptchaToken: strings.Repeat("c", contract.CaptchaTokenMinLength)})
	deadline := time.Now().Add(30 * time.Second)
	var a answer
	for {
		req, _ := http.NewRequest(http.MethodPost, edge+contract.PathVotes, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Errorf("vote at %s: %v", edge, err)
			return a
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a.status = resp.StatusCode
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			a.retries++
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(min(max(wait, 1), 3)) * time.Second)
			continue
		}
		if resp.StatusCode == http.StatusOK {
			var res contract.VoteResult
			if err := json.Unmarshal(b, &res); err != nil || res.VoteID == "" {
				t.Errorf("200 at %s without a vote: %s", edge, b)
			}
			a.voteID = res.VoteID
		}
		return a
	}
}

func voteStatus(t *testing.T, c *http.Client, edge, token, electionID, sub string) string {
	req, _ := http.NewRequest(http.MethodGet, edge+contract.PathVoteStatus+electionID+"/"+url.PathEscape(sub), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("status at %s: %v", edge, err)
	}
	defer resp.Body.Close()
	var st struct {
		HasVoted bool   `json:"hasVoted"`
		VoteID   string `json:"voteId"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK || !st.HasVoted {
		t.Fatalf("status at %s: %d hasVoted %v %v", edge, resp.StatusCode, st.HasVoted, err)
	}
	return st.VoteID
}

type counter struct {
	outcome, home string
	n             int
}

var counterLine = regexp.MustCompile(`^envoy_dynamicmodulescustom_votefilter_requests\{(.*)\} (\d+)$`)

// edgeCounters reads the vote filter's request counters from an Envoy's Prometheus endpoint.
func edgeCounters(t *testing.T, admin string) []counter {
	resp, err := http.Get(admin + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []counter
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := counterLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		c := counter{}
		c.n, _ = strconv.Atoi(m[2])
		for _, kv := range strings.Split(m[1], ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "outcome":
				c.outcome = v
			case "home_region":
				c.home = v
			}
		}
		out = append(out, c)
	}
	return out
}
