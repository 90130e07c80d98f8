package votefilter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/tvvote/voting/auth"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/dedup/dedupfake"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/homeregion"
)

// fleet is two regions' edges over two regions' stores, as a two-region deployment has them.
type fleet struct {
	edges  map[string]*Admitter
	gates  map[string]*dedupfake.Gate
	queues map[string]*fakeQueue
	ver    *fakeVerifier
}

var fleetRegions = []string{"eu-west-1", "us-east-1"}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{edges: map[string]*Admitter{}, gates: map[string]*dedupfake.Gate{}, queues: map[string]*fakeQueue{},
		ver: newFakeVerifier()}
	for _, r := range fleetRegions {
		f.gates[r], f.queues[r] = dedupfake.New(duringVote, dedup.Options{}), &fakeQueue{}
	}
	for _, r := range fleetRegions {
		cfg := testConfig()
		cfg.Region = r
		peers := map[string]Store{}
		for _, p := range fleetRegions {
			if p != r {
				cfg.PeerRegions = append(cfg.PeerRegions, edgeconfig.RegionStore{Name: p})
				peers[p] = Store{Gate: f.gates[p], Queue: f.queues[p]}
			}
		}
		a, err := NewAdmitter(cfg, f.ver, f.gates[r], f.queues[r], captcha.StaticKey(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.WithPeerRegions(peers); err != nil {
			t.Fatal(err)
		}
		a.now = func() time.Time { return duringVote }
		a.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		f.edges[r] = a
	}
	return f
}

// viewerHomedIn is a token whose viewer's home is region.
func (f *fleet) viewerHomedIn(t *testing.T, region string) (token, sub string) {
	for i := range 100 {
		sub = fmt.Sprintf("auth0|roaming-%d", i)
		if homeregion.Of(sub, fleetRegions) == region {
			token = "token-" + sub
			f.ver.mu.Lock()
			f.ver.ids[token] = auth.Principal{Subject: sub}
			f.ver.mu.Unlock()
			return token, sub
		}
	}
	t.Fatalf("no viewer homed in %s among 100", region)
	return "", ""
}

// A viewer who votes through both regions' edges, at once, gets one 200: both edges ask the
// viewer's home store, and the vote travels on the home region's queue.
func TestRoamingViewerIsAdmittedOnceAcrossRegions(t *testing.T) {
	for _, home := range fleetRegions {
		t.Run("home "+home, func(t *testing.T) {
			f := newFleet(t)
			token, sub := f.viewerHomedIn(t, home)
			req := goodRequest()
			req.Authorization = "Bearer " + token
			var wg sync.WaitGroup
			got := map[string]Response{}
			var mu sync.Mutex
			for _, r := range fleetRegions {
				wg.Go(func() {
					resp := admit(f.edges[r], context.Background(), req)
					mu.Lock()
					got[r] = resp
					mu.Unlock()
				})
			}
			wg.Wait()
			ok := 0
			for r, resp := range got {
				if resp.HomeRegion != home {
					t.Errorf("%s edge: decided in %q, want the home %s", r, resp.HomeRegion, home)
				}
				switch resp.Status {
				case 200:
					ok++
				case 409:
				default:
					t.Errorf("%s edge: %d %s", r, resp.Status, resp.Body)
				}
			}
			if ok != 1 {
				t.Fatalf("%d answers of 200 across the regions, want 1", ok)
			}
			for _, r := range fleetRegions {
				want := 0
				if r == home {
					want = 1
				}
				if n := len(f.queues[r].sent); n != want {
					t.Errorf("%s queue holds %d votes, want %d", r, n, want)
				}
			}
			v := f.queues[home].sent[0]
			if v.HomeRegion != home || v.UserID != sub {
				t.Errorf("queued vote home %q viewer %q, want %s %s", v.HomeRegion, v.UserID, home, sub)
			}
			// Both edges tell the viewer the same truth: the home store's final entry.
			for _, r := range fleetRegions {
				resp, fallback := f.edges[r].Status(context.Background(), &StatusLookup{ElectionID: testElection, UserID: sub}, "rid")
				var st VoteStatus
				if fallback || json.Unmarshal(resp.Body, &st) != nil || !st.HasVoted || st.VoteID != v.VoteID {
					t.Errorf("%s edge status: fallback %v, %s; want hasVoted with %s", r, fallback, resp.Body, v.VoteID)
				}
			}
		})
	}
}

// A token that claims a home region is admitted there, wherever the hash would put its
// viewer, and an admin who cannot know the claim still reads the viewer's vote at any edge.
func TestAClaimedHomeDecidesAndAdminsFindIt(t *testing.T) {
	f := newFleet(t)
	for _, a := range f.edges {
		a.cfg.JWT.HomeRegionClaim = "https://votes.test/home_region"
	}
	_, sub := f.viewerHomedIn(t, "eu-west-1")
	f.ver.mu.Lock()
	f.ver.ids["claims-us"] = auth.Principal{Subject: sub, HomeRegion: "us-east-1"}
	f.ver.mu.Unlock()
	req := goodRequest()
	req.Authorization = "Bearer claims-us"
	if resp := admit(f.edges["eu-west-1"], context.Background(), req); resp.Status != 200 || resp.HomeRegion != "us-east-1" {
		t.Fatalf("eu edge: %d, decided in %q; want 200 from the claimed us store", resp.Status, resp.HomeRegion)
	}
	if len(f.queues["us-east-1"].sent) != 1 || len(f.queues["eu-west-1"].sent) != 0 {
		t.Fatal("the vote did not travel on the claimed home's queue")
	}
	for r, a := range f.edges {
		l, rej := a.CheckStatus(context.Background(), StatusQuery{Authorization: "Bearer " + adminToken,
			Path: "/api/v1/votes/status/" + testElection + "/" + sub})
		if rej != nil {
			t.Fatal(rej)
		}
		resp, fallback := a.Status(context.Background(), l, "rid")
		var st VoteStatus
		if fallback || json.Unmarshal(resp.Body, &st) != nil || !st.HasVoted {
			t.Errorf("admin at %s: fallback %v, %s; want the vote found in the us store", r, fallback, resp.Body)
		}
	}
}

func TestAPeerRegionWithoutAStoreIsRefused(t *testing.T) {
	cfg := testConfig()
	cfg.PeerRegions = []edgeconfig.RegionStore{{Name: "us-east-1"}}
	a, err := NewAdmitter(cfg, newFakeVerifier(), dedupfake.New(duringVote, dedup.Options{}), &fakeQueue{}, captcha.StaticKey(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WithPeerRegions(map[string]Store{}); err == nil {
		t.Fatal("an admitter without the store of a peer region was built")
	}
}
