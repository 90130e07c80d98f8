// Package tracing_test follows one vote through the traces: Envoy's span for the request, the
// trace context on the vote's SQS message, and the processor's batch span linking back to it,
// all found in Jaeger through its HTTP query API; and a results read, whose results-worker span
// is in Envoy's trace.
package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/devstack"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/xds/snapshot"
)

// jaegerTrace is the part of Jaeger's /api/traces answer the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		TraceID       string `json:"traceID"`
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func (tr jaegerTrace) service(processID string) string { return tr.Processes[processID].ServiceName }

// sameID compares Jaeger's hex ids, which may drop leading zeros.
func sameID(a, b string) bool {
	return a != "" && strings.TrimLeft(strings.ToLower(a), "0") == strings.TrimLeft(strings.ToLower(b), "0")
}

func TestOneVoteIsTracedFromEnvoyToTheProcessorsBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := devstack.Start(ctx, devstack.Options{Region: "trace-region", Tracing: true,
		ControlPlaneEnv: []string{"XDS_TRACING_SAMPLING=100"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if s.JaegerURL() == "" {
		t.Fatalf("no trace backend: %s", s.TracingLine())
	}
	e, err := s.SeedElection(ctx, t.Name(), time.Hour, "Alice Example", "Bob Example")
	if err == nil {
		err = s.WaitEnvoyKnows(ctx, e.ID)
	}
	if err != nil {
		t.Fatal(err)
	}

	// One vote, with a correlation id of our own to find its trace by.
	requestID := uuid.NewString()
	tok, err := s.Token(ctx, uuid.NewString(), false)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(contract.VoteRequest{ElectionID: e.ID, CandidateID: e.Candidates[0].ID, CaptchaToken: solvedCaptcha(t, s)})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.EnvoyURL()+"/api/v1/votes", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("x-request-id", requestID)
	status, answer := send(t, req)
	if status != http.StatusOK {
		t.Fatalf("vote: %d %s", status, answer)
	}

	// Envoy's span for it, tagged with the request id.
	tags, _ := json.Marshal(map[string]string{"guid:x-request-id": requestID})
	var edgeTraceID, edgeSpanID string
	waitFor(t, 30*time.Second, "Envoy's span of the vote", func() bool {
		for _, tr := range traces(t, s, snapshot.TracingServiceName, url.Values{"tags": {string(tags)}}) {
			for _, sp := range tr.Spans {
				if tr.service(sp.ProcessID) == snapshot.TracingServiceName {
					edgeTraceID, edgeSpanID = sp.TraceID, sp.SpanID
					return true
				}
			}
		}
		return false
	})

	// The processor's batch span links to exactly that span.
	waitFor(t, 30*time.Second, "the processor's batch span linking to "+edgeTraceID, func() bool {
		for _, tr := range traces(t, s, "voting-processor", nil) {
			for _, sp := range tr.Spans {
				if tr.service(sp.ProcessID) != "voting-processor" || sp.OperationName != "vote batch" {
					continue
				}
				if slices.ContainsFunc(sp.References, func(r struct {
					RefType string `json:"refType"`
					TraceID string `json:"traceID"`
					SpanID  string `json:"spanID"`
				}) bool {
					return sameID(r.TraceID, edgeTraceID) && sameID(r.SpanID, edgeSpanID)
				}) {
					return true
				}
			}
		}
		return false
	})

	// A results read through Envoy: the results worker's span is in Envoy's trace.
	readID := uuid.NewString()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s.EnvoyURL()+"/api/v1/results/live/"+e.ID, nil)
	req.Header.Set("x-request-id", readID)
	if status, answer := send(t, req); status != http.StatusOK {
		t.Fatalf("results: %d %s", status, answer)
	}
	tags, _ = json.Marshal(map[string]string{"guid:x-request-id": readID})
	waitFor(t, 30*time.Second, "the results worker's span in Envoy's trace of a results read", func() bool {
		for _, tr := range traces(t, s, snapshot.TracingServiceName, url.Values{"tags": {string(tags)}}) {
			for _, sp := range tr.Spans {
				if tr.service(sp.ProcessID) == "voting-results" {
					return true
				}
			}
		}
		return false
	})
}

// traces asks Jaeger's HTTP query API for the recent traces of service.
func traces(t *testing.T, s *devstack.Stack, service string, extra url.Values) []jaegerTrace {
	t.Helper()
	q := url.Values{"service": {service}, "lookback": {"1h"}, "limit": {"100"}}
	for k, v := range extra {
		q[k] = v
	}
	req, _ := http.NewRequest(http.MethodGet, s.JaegerURL()+"/api/traces?"+q.Encode(), nil)
	status, b := send(t, req)
	if status == http.StatusNotFound || status == http.StatusBadRequest && bytes.Contains(b, []byte("service")) {
		return nil // the service has not reported yet
	}
	if status != http.StatusOK {
		t.Fatalf("jaeger /api/traces: %d %s", status, b)
	}
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("jaeger /api/traces: %v: %s", err, b)
	}
	return out.Data
}

func send(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not found within %s: %s", within, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func solvedCaptcha(t *testing.T, s *devstack.Stack) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.EnvoyURL()+"/api/v1/votes/challenge", nil)
	status, b := send(t, req)
	var c captcha.Challenge
	if err := json.Unmarshal(b, &c); err != nil || status != http.StatusOK {
		t.Fatal(fmt.Errorf("challenge: %d %s %v", status, b, err))
	}
	return captcha.Solve(c.Challenge, c.Difficulty)
}
