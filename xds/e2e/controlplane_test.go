package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
)

// voteAccepted votes as a fresh viewer until the edge accepts, and returns the vote's result.
func voteAccepted(t *testing.T, edge *devstack.Edge, e election, timeout time.Duration) contract.VoteResult {
	t.Helper()
	var res contract.VoteResult
	until(t, timeout, "vote accepted at "+edge.Region, func() error {
		r := vote(t, nil, edge, uuid.NewString(), e)
		if r.status != http.StatusOK {
			return fmt.Errorf("%d %s", r.status, r.body)
		}
		return json.Unmarshal(r.body, &res)
	})
	return res
}

// create → add candidates → open → a vote is accepted in both regions; close → a vote is
// rejected in both within 1 s; the votes are persisted with the region of their edge.
func TestElectionLifecycleAcrossRegions(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	var voteIDs []string
	for _, edge := range edges {
		took := time.Now()
		res := voteAccepted(t, edge, e, 2*time.Second)
		t.Logf("%s: accepting %s after the open returned", edge.Region, time.Since(took).Round(time.Millisecond))
		voteIDs = append(voteIDs, res.VoteID)
	}

	start := time.Now()
	var closed election
	want(t, api(t, south, tok, "PATCH", "/api/v1/admin/elections/"+e.ID+"/status", map[string]any{"status": "CLOSED"}), 200, &closed)
	if closed.Status != "CLOSED" || closed.EndDate.After(time.Now()) {
		t.Fatalf("closed %+v", closed)
	}
	for _, edge := range edges {
		until(t, time.Second, "vote refused at "+edge.Region, func() error {
			r := vote(t, nil, edge, uuid.NewString(), e)
			if r.status == http.StatusConflict && strings.Contains(string(r.body), contract.CodeElectionNotOpen) {
				return nil
			}
			return fmt.Errorf("%d %s", r.status, r.body)
		})
		t.Logf("%s: refusing %s after the close was asked for", edge.Region, time.Since(start).Round(time.Millisecond))
		if time.Since(start) > time.Second {
			t.Fatalf("%s still admitting %s after the close", edge.Region, time.Since(start))
		}
		wantError(t, vote(t, nil, edge, uuid.NewString(), e), http.StatusConflict, contract.CodeElectionNotOpen)
	}

	// Each accepted vote reaches PostgreSQL, stamped with its edge's region.
	conn, err := pgx.Connect(context.Background(), stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i, id := range voteIDs {
		var region string
		until(t, 15*time.Second, "vote persisted", func() error {
			return conn.QueryRow(context.Background(), `SELECT region FROM votes WHERE id = $1`, id).Scan(&region)
		})
		if region != edges[i].Region {
			t.Fatalf("vote %s persisted with region %q, want %q", id, region, edges[i].Region)
		}
	}
	var actions []string
	rows, err := conn.Query(context.Background(), `SELECT actor || ' ' || action FROM admin_audit WHERE election_id = $1 ORDER BY id`, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	actions, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(actions, "; ")
	for _, w := range []string{"election.create", "candidate.create", "election.schedule", "election.open", "election.close"} {
		if !strings.Contains(got, "admin-"+t.Name()+" "+w) {
			t.Fatalf("audit lacks %s: %s", w, got)
		}
	}
}

// An election opens at startDate and closes at endDate by itself: every edge admits votes
// only inside the window, and the scheduler records both transitions as "scheduler".
func TestScheduledWindowOpensAndClosesOnTime(t *testing.T) {
	tok := adminToken(t)
	now := time.Now().UTC()
	startAt, endAt := now.Add(2*time.Second).Truncate(time.Millisecond), now.Add(5*time.Second).Truncate(time.Millisecond)
	e := newElection(t, tok, startAt, endAt)

	// Before the start: known at every edge, not open.
	for _, edge := range edges {
		until(t, 2*time.Second, "election known at "+edge.Region, func() error {
			if dump(t, edge).election(e.ID) == nil {
				return fmt.Errorf("not in config yet")
			}
			return nil
		})
		if time.Now().Before(startAt) {
			wantError(t, vote(t, nil, edge, uuid.NewString(), e), http.StatusConflict, contract.CodeElectionNotOpen)
		}
	}

	// Vote continuously at both edges across the whole window.
	type outcome struct {
		edge     string
		sent     time.Time
		status   int
		accepted time.Time
	}
	var mu sync.Mutex
	var outcomes []outcome
	var wg sync.WaitGroup
	for _, edge := range edges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(endAt.Add(1500 * time.Millisecond)) {
				sent := time.Now()
				r := vote(t, nil, edge, uuid.NewString(), e)
				o := outcome{edge: edge.Region, sent: sent, status: r.status}
				if r.status == http.StatusOK {
					var res contract.VoteResult
					_ = json.Unmarshal(r.body, &res)
					o.accepted = res.AcceptedAt
				}
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	for _, region := range []string{north.Region, south.Region} {
		var firstOK, lastOK, firstRefusedAfterEnd time.Time
		for _, o := range outcomes {
			if o.edge != region {
				continue
			}
			switch {
			case o.status == http.StatusOK:
				if o.accepted.Before(startAt) || !o.accepted.Before(endAt) {
					t.Fatalf("%s accepted a vote at %s, outside [%s, %s)", region, o.accepted, startAt, endAt)
				}
				if firstOK.IsZero() {
					firstOK = o.sent
				}
				lastOK = o.sent
			case o.status == http.StatusConflict && o.sent.After(endAt) && firstRefusedAfterEnd.IsZero():
				firstRefusedAfterEnd = o.sent
			case o.status != http.StatusConflict:
				t.Fatalf("%s: unexpected status %d", region, o.status)
			}
		}
		if firstOK.IsZero() || firstOK.Sub(startAt) > time.Second {
			t.Fatalf("%s: first accepted vote sent %v after the start", region, firstOK.Sub(startAt))
		}
		if firstRefusedAfterEnd.IsZero() || firstRefusedAfterEnd.Sub(endAt) > time.Second || lastOK.After(endAt.Add(time.Second)) {
			t.Fatalf("%s: last accepted %v, first refused %v after the end", region, lastOK.Sub(endAt), firstRefusedAfterEnd.Sub(endAt))
		}
		t.Logf("%s: first accepted +%v after start, first refused +%v after end", region,
			firstOK.Sub(startAt).Round(time.Millisecond), firstRefusedAfterEnd.Sub(endAt).Round(time.Millisecond))
	}

	// The scheduler wrote both transitions.
	conn, err := pgx.Connect(context.Background(), stack.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var status string
	until(t, 2*time.Second, "CLOSED in PostgreSQL", func() error {
		if err := conn.QueryRow(context.Background(), `SELECT status FROM elections WHERE id = $1`, e.ID).Scan(&status); err != nil {
			return err
		}
		if status != "CLOSED" {
			return fmt.Errorf("status %s", status)
		}
		return nil
	})
	rows, _ := conn.Query(context.Background(), `SELECT action FROM admin_audit WHERE election_id = $1 AND actor = 'scheduler' ORDER BY id`, e.ID)
	actions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(actions, ",") != "election.open,election.close" {
		t.Fatalf("scheduler audit %v %v", actions, err)
	}
}

// A limit change reaches every Envoy in under a second; with perViewer max 1 a viewer's second
// attempt is refused 429.
func TestLimitChangeReachesEveryEdge(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	t.Cleanup(func() {
		// The stack is shared: back to the environment's limits.
		want(t, api(t, north, tok, "PUT", "/api/v1/admin/edge-settings", map[string]any{}), 200, nil)
	})
	start := time.Now()
	want(t, api(t, north, tok, "PUT", "/api/v1/admin/edge-settings", map[string]any{
		"perViewer": map[string]int{"max": 1, "windowSeconds": 60}}), 200, nil)
	for _, edge := range edges {
		until(t, time.Second, "perViewer 1 at "+edge.Region, func() error {
			limits, _ := dump(t, edge).config["limits"].(map[string]any)
			pv, _ := limits["perViewer"].(map[string]any)
			if pv["max"] != 1.0 || pv["windowSeconds"] != 60.0 {
				return fmt.Errorf("limits %v", limits)
			}
			return nil
		})
		t.Logf("%s: new limit after %s", edge.Region, time.Since(start).Round(time.Millisecond))
	}
	for _, edge := range edges {
		viewer := uuid.NewString()
		if r := vote(t, nil, edge, viewer, e); r.status != http.StatusOK {
			t.Fatalf("%s first attempt: %d %s", edge.Region, r.status, r.body)
		}
		wantError(t, vote(t, nil, edge, viewer, e), http.StatusTooManyRequests, contract.CodeRateLimited)
	}

	// A region's override reaches that region only.
	want(t, api(t, north, tok, "PUT", "/api/v1/admin/edge-settings/eu-south", map[string]any{
		"perIp": map[string]int{"max": 77, "windowSeconds": 7}}), 200, nil)
	until(t, time.Second, "region override at eu-south", func() error {
		limits, _ := dump(t, south).config["limits"].(map[string]any)
		if ip, _ := limits["perIp"].(map[string]any); ip["max"] != 77.0 {
			return fmt.Errorf("limits %v", limits)
		}
		return nil
	})
	limits, _ := dump(t, north).config["limits"].(map[string]any)
	if ip, _ := limits["perIp"].(map[string]any); ip["max"] == 77.0 {
		t.Fatalf("eu-north got eu-south's override: %v", limits)
	}
	if r := api(t, north, tok, "DELETE", "/api/v1/admin/edge-settings/eu-south", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete override: %d %s", r.status, r.body)
	}
}

// Elections change only the filter's ECDS config: the listener keeps its version, and a
// keep-alive connection opened before the change serves requests after it with the new config.
func TestElectionChangeSwapsFilterConfigWithoutDrain(t *testing.T) {
	tok := adminToken(t)
	before := map[string]filterState{}
	for _, edge := range edges {
		before[edge.Region] = dump(t, edge)
		if before[edge.Region].listenerVersion == "" || before[edge.Region].ecdsVersion == "" {
			t.Fatalf("%s: no listener or ECDS version in config_dump: %+v", edge.Region, before[edge.Region])
		}
	}
	// One connection, kept alive across the change.
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	reused := func(edge *devstack.Edge, e election) (reply, bool) {
		var got bool
		b, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID, CaptchaToken: "e2e-dummy-captcha-token-0123456789"})
		req, _ := http.NewRequest(http.MethodPost, edge.URL()+"/api/v1/votes", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token(t, uuid.NewString(), false))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { got = i.Reused },
		}))
		return do(t, client, req), got
	}
	unknown := election{ID: uuid.NewString(), Candidates: []candidate{{ID: uuid.NewString()}}}
	wantError(t, func() reply { r, _ := reused(south, unknown); return r }(), http.StatusNotFound, contract.CodeElectionNotFound)

	now := time.Now().UTC()
	e := newElection(t, tok, now.Add(time.Hour), now.Add(2*time.Hour)) // SCHEDULED: known, not open
	until(t, 2*time.Second, "new election on the kept connection", func() error {
		r, wasReused := reused(south, e)
		if !wasReused {
			t.Fatal("the connection was not kept: the listener drained it")
		}
		if r.status != http.StatusConflict {
			return fmt.Errorf("%d %s", r.status, r.body)
		}
		return nil
	})
	for _, edge := range edges {
		after := dump(t, edge)
		if after.listenerVersion != before[edge.Region].listenerVersion {
			t.Fatalf("%s: listener version moved %s → %s on an elections change", edge.Region,
				before[edge.Region].listenerVersion, after.listenerVersion)
		}
		until(t, time.Second, "ECDS version moved at "+edge.Region, func() error {
			if version(dump(t, edge).ecdsVersion) <= version(before[edge.Region].ecdsVersion) {
				return fmt.Errorf("ecds version still %s", before[edge.Region].ecdsVersion)
			}
			return nil
		})
	}
}

// With the control plane killed both edges keep admitting votes with their last config; the
// admin API answers 503 in the contract's shape; once it is back the edges resync, and the
// versions keep increasing across the restart.
func TestControlPlaneDownEdgesKeepServingThenResync(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	for _, edge := range edges {
		voteAccepted(t, edge, e, 2*time.Second)
	}
	before := dump(t, south).ecdsVersion

	if err := stack.Kill(devstack.ComponentControlPlane); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = stack.Restart(context.Background(), devstack.ComponentControlPlane)
		}
	})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, edge := range edges {
			if r := vote(t, nil, edge, uuid.NewString(), e); r.status != http.StatusOK {
				t.Fatalf("%s without control plane: %d %s", edge.Region, r.status, r.body)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Through Envoy the admin API is unavailable in the contract's shape, not Envoy's plain text.
	wantError(t, apiAt(t, north.URL(), tok, "GET", "/api/v1/admin/elections", nil), http.StatusServiceUnavailable, contract.CodeUnavailable)

	if err := stack.Restart(context.Background(), devstack.ComponentControlPlane); err != nil {
		t.Fatal(err)
	}
	restarted = true
	until(t, 20*time.Second, "admin API back", func() error {
		req, _ := http.NewRequest(http.MethodGet, stack.ControlPlaneAdminURL()+"/api/v1/admin/elections?size=1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	// A change after the restart reaches both edges with a higher version than before it.
	now := time.Now().UTC()
	later := newElection(t, tok, now.Add(time.Hour), now.Add(2*time.Hour))
	for _, edge := range edges {
		until(t, 5*time.Second, "resynced "+edge.Region, func() error {
			fs := dump(t, edge)
			if fs.election(later.ID) == nil {
				return fmt.Errorf("new election not at the edge (ecds %s)", fs.ecdsVersion)
			}
			if version(fs.ecdsVersion) <= version(before) {
				return fmt.Errorf("version went from %s to %s", before, fs.ecdsVersion)
			}
			return nil
		})
		voteAccepted(t, edge, e, time.Second)
	}
	until(t, 5*time.Second, "both edges reconnected", func() error {
		for _, region := range []string{north.Region, south.Region} {
			if v, _ := metric(t, "xds_connected_envoys", `region="`+region+`"`); v != 1 {
				return fmt.Errorf("%s: %v connected", region, v)
			}
		}
		return nil
	})
}

// An Envoy that NACKs its config (here: its module is missing) is counted and logged with its
// node and reason, and does not poison the others: they keep admitting and take new changes.
func TestNACKingEdgeDoesNotPoisonTheOthers(t *testing.T) {
	tok := adminToken(t)
	e := openElection(t, tok)
	broken, err := stack.StartEdge(context.Background(), devstack.EdgeOptions{Region: "broken", ModuleDir: t.TempDir(), NoWait: true})
	if err != nil {
		t.Fatal(err)
	}
	defer broken.Stop()
	until(t, 10*time.Second, "NACK counted", func() error {
		if v, _ := metric(t, "xds_nacks_total", `[^}]*region="broken"`); v < 1 {
			return fmt.Errorf("nacks %v", v)
		}
		return nil
	})
	logs, _ := os.ReadFile(stack.LogPath("controlplane"))
	logged := false
	for _, line := range strings.Split(string(logs), "\n") {
		var l struct{ Msg, Node, Err string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "envoy rejected config (NACK)" &&
			l.Node == broken.NodeID && strings.Contains(l.Err, "libvotefilter.so") {
			logged = true
		}
	}
	if !logged {
		t.Fatalf("NACK not logged with node and reason")
	}
	// A broken edge fails closed: it admits nothing.
	if r := vote(t, nil, broken, uuid.NewString(), e); r.status == http.StatusOK {
		t.Fatal("an edge without a filter config admitted a vote")
	}
	now := time.Now().UTC()
	later := newElection(t, tok, now.Add(time.Hour), now.Add(2*time.Hour))
	for _, edge := range edges {
		until(t, 2*time.Second, "change reaches "+edge.Region, func() error {
			if dump(t, edge).election(later.ID) == nil {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		voteAccepted(t, edge, e, time.Second)
	}
}

// The control plane's metrics show the fleet: Envoys per region, each node's version, push
// latency.
func TestFleetMetrics(t *testing.T) {
	tok := adminToken(t)
	now := time.Now().UTC()
	newElection(t, tok, now.Add(time.Hour), now.Add(2*time.Hour))
	until(t, 3*time.Second, "fleet metrics", func() error {
		published, ok := metric(t, "xds_snapshot_version", "")
		if !ok {
			return fmt.Errorf("no snapshot version")
		}
		for _, edge := range edges {
			if v, _ := metric(t, "xds_connected_envoys", `region="`+edge.Region+`"`); v != 1 {
				return fmt.Errorf("%s: %v envoys", edge.Region, v)
			}
			v, ok := metric(t, "xds_node_config_version", `node="`+edge.NodeID+`",region="`+edge.Region+`",type="extension_config"`)
			if !ok || v != published {
				return fmt.Errorf("%s acknowledged %v, published %v", edge.NodeID, v, published)
			}
		}
		if n, _ := metric(t, "xds_push_latency_seconds_count", `type="extension_config"`); n < 1 {
			return fmt.Errorf("no push latency observed")
		}
		return nil
	})
}

// Operators reach the admin API through any edge: the edge checks the token and the admin
// permission, Envoy routes /api/v1/admin/ to the control plane, which checks again. Every
// admin path answers through Envoy with the contract's status and body.
func TestAdminAPIThroughEnvoy(t *testing.T) {
	tok := adminToken(t)
	viewer := token(t, uuid.NewString(), false)
	// A stuck request fails the test quickly rather than at Envoy's route timeout.
	client := &http.Client{Timeout: 5 * time.Second}
	call := func(edge *devstack.Edge, tok, method, path string, body any) reply {
		t.Helper()
		req, _ := http.NewRequest(method, edge.URL()+path, nil)
		if body != nil {
			b, _ := json.Marshal(body)
			req, _ = http.NewRequest(method, edge.URL()+path, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s through %s: %v", method, path, edge.Region, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return reply{resp.StatusCode, resp.Header, b}
	}
	for _, edge := range edges {
		r := call(edge, "", "GET", "/api/v1/admin/elections", nil)
		wantError(t, r, http.StatusUnauthorized, contract.CodeUnauthorized)
		wantError(t, call(edge, viewer, "GET", "/api/v1/admin/elections", nil), http.StatusForbidden, contract.CodeForbidden)
		wantError(t, call(edge, viewer, "POST", "/api/v1/admin/elections", map[string]any{}), http.StatusForbidden, contract.CodeForbidden)
		var page struct {
			Content []election `json:"content"`
			Size    int        `json:"size"`
		}
		want(t, call(edge, tok, "GET", "/api/v1/admin/elections?size=3", nil), http.StatusOK, &page)
		if page.Size != 3 {
			t.Fatalf("%s: page %+v", edge.Region, page)
		}
		wantError(t, call(edge, tok, "GET", "/api/v1/admin/no-such-thing", nil), http.StatusNotFound, contract.CodeNotFound)
	}

	// Every admin path with a body, through the edges.
	now := time.Now().UTC()
	var e election
	want(t, call(north, tok, "POST", "/api/v1/admin/elections", map[string]any{"title": "Through Envoy", "description": "",
		"startDate": now.Add(time.Hour), "endDate": now.Add(2 * time.Hour)}), http.StatusCreated, &e)
	base := "/api/v1/admin/elections/" + e.ID
	want(t, call(south, tok, "PUT", base, map[string]any{"description": "edited"}), http.StatusOK, nil)
	var c1, c2 candidate
	want(t, call(north, tok, "POST", base+"/candidates", map[string]any{"name": "Aurora Lights", "party": ""}), http.StatusCreated, &c1)
	want(t, call(south, tok, "POST", base+"/candidates", map[string]any{"name": "Blue Harbour", "party": ""}), http.StatusCreated, &c2)
	want(t, call(north, tok, "PUT", base+"/candidates/"+c2.ID, map[string]any{"party": "Harbour"}), http.StatusOK, nil)
	wantError(t, call(south, tok, "PATCH", base+"/status", map[string]any{"status": "PAUSED"}), http.StatusBadRequest, contract.CodeInvalidRequest)
	want(t, call(north, tok, "PATCH", base+"/status", map[string]any{"status": "ACTIVE"}), http.StatusOK, nil)
	wantError(t, call(south, tok, "DELETE", base+"/candidates/"+c1.ID, nil), http.StatusBadRequest, contract.CodeInvalidRequest)
	want(t, call(north, tok, "PATCH", base+"/status", map[string]any{"status": "CLOSED"}), http.StatusOK, nil)
	if r := call(south, tok, "DELETE", base, nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	wantError(t, call(north, tok, "DELETE", "/api/v1/admin/elections/"+uuid.NewString(), nil), http.StatusNotFound, contract.CodeElectionNotFound)
	want(t, call(south, tok, "PUT", "/api/v1/admin/edge-settings/eu-south", map[string]any{}), http.StatusOK, nil)
	if r := call(north, tok, "DELETE", "/api/v1/admin/edge-settings/eu-south", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete edge settings: %d %s", r.status, r.body)
	}
}
