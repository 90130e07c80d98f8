// Package mtls proves ADS over mutual TLS end to end, on the real control plane binary and real
// Envoys with libvotefilter.so: an Envoy with a client certificate from the stack's CA gets its
// listener, routes and vote filter config and takes votes; an Envoy showing no certificate, one
// from another CA, or dialling in plaintext gets nothing, and the control plane logs why.
package mtls

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/envoy"
)

var stack *devstack.Stack

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	s, err := devstack.Start(ctx, devstack.Options{Region: "mtls", BinDir: os.Getenv("XDS_E2E_BIN_DIR"),
		CaptchaMode: "off", XDSMutualTLS: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stack:", err)
		os.Exit(1)
	}
	stack = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}

// The stack's own Envoy came up over mutual TLS (Start waits for its routes) and takes a vote;
// the control plane names its client certificate.
func TestEnvoyWithClientCertificateGetsConfigAndVotes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := stack.SeedElection(ctx, "mTLS "+t.Name(), time.Hour, "Aurora Lights", "Blue Harbour")
	if err != nil {
		t.Fatal(err)
	}
	if err := stack.WaitEnvoyKnows(ctx, e.ID); err != nil {
		t.Fatal(err)
	}
	tok, err := stack.Token(ctx, uuid.NewString(), false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID,
		CaptchaToken: "e2e-dummy-captcha-token-0123456789"})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, stack.EnvoyURL()+"/api/v1/votes", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"accepted"`) {
		t.Fatalf("vote: %d %s", resp.StatusCode, body)
	}
	node := stack.PrimaryEdge().NodeID
	log := readLog(t, stack.LogPath(devstack.ComponentControlPlane))
	if !strings.Contains(log, `"node":"`+node+`"`) || !strings.Contains(log, `"client_cert":"CN=`+node) {
		t.Fatalf("the control plane log names no client certificate for %s", node)
	}
}

// Envoys without a valid client certificate get no config at all: no dynamic listener, no vote
// filter (ECDS), never connected; the control plane logs each refused handshake.
func TestEnvoyWithoutValidClientCertificateGetsNothing(t *testing.T) {
	foreign, err := devstack.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := foreign.ClientTLS("intruder")
	if err != nil {
		t.Fatal(err)
	}
	// It trusts the real control plane: only its own certificate is wrong.
	intruder.CAFile = stack.PKI.CAFile
	cases := map[string]devstack.EdgeOptions{
		"no-cert":   {XDSTLS: &envoy.XDSTLS{CAFile: stack.PKI.CAFile, ServerName: devstack.XDSServerName}},
		"other-ca":  {XDSTLS: intruder},
		"plaintext": {PlaintextXDS: true},
	}
	edges := map[string]*devstack.Edge{}
	for name, o := range cases {
		o.Region, o.NoWait = "mtls-"+name, true
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		edge, err := stack.StartEdge(ctx, o)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(edge.Stop)
		edges[name] = edge
	}
	// Envoy redials every ≤2 s; a few refusals each, then a look at what they run with.
	time.Sleep(8 * time.Second)
	log := readLog(t, stack.LogPath(devstack.ComponentControlPlane))
	for name, why := range map[string]string{"no-cert": "client didn't provide a certificate",
		"other-ca": "certificate signed by unknown authority", "plaintext": "first record does not look like a TLS handshake"} {
		if !strings.Contains(log, `"msg":"ADS TLS handshake failed"`) || !strings.Contains(log, why) {
			t.Errorf("%s: the control plane logged no refused handshake (%s)", name, why)
		}
	}
	for name, edge := range edges {
		if strings.Contains(log, `"node":"`+edge.NodeID+`"`) {
			t.Errorf("%s: the control plane served node %s", name, edge.NodeID)
		}
		listeners := adminGet(t, edge, "/config_dump?resource=dynamic_listeners")
		ecds := adminGet(t, edge, "/config_dump?resource=ecds_filters")
		if strings.Contains(listeners, `"name": "public"`) || strings.Contains(ecds, "votefilter") {
			t.Errorf("%s: Envoy got config:\n%s\n%s", name, listeners, ecds)
		}
		if st := adminGet(t, edge, "/stats?filter=^control_plane.connected_state$"); !strings.Contains(st, "control_plane.connected_state: 0") {
			t.Errorf("%s: %s", name, st)
		}
	}
	// The same Envoy with a certificate of the stack's CA is served: the refusals were the
	// certificates', not the set-up's.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	good, err := stack.StartEdge(ctx, devstack.EdgeOptions{Region: "mtls-good"})
	if err != nil {
		t.Fatal(err)
	}
	good.Stop()
}

func adminGet(t *testing.T, edge *devstack.Edge, path string) string {
	t.Helper()
	resp, err := http.Get(edge.AdminURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
