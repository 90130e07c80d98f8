package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeAdmin records the calls of the CLI and answers like the admin API.
type fakeAdmin struct {
	mu    sync.Mutex
	calls []string
	put   map[string]any
	get   string
}

func (f *fakeAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodGet:
		io.WriteString(w, f.get)
	case http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		f.put = map[string]any{}
		_ = json.Unmarshal(b, &f.put)
		io.WriteString(w, `{"scope":"eu"}`)
	case http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	}
}

func TestEdgeSettingsCLIKeepsWhatItDoesNotChange(t *testing.T) {
	f := &fakeAdmin{get: `{"scope":"eu","override":{"scope":"eu","perIp":{"max":50,"windowSeconds":10},"captchaMode":"off","updatedAt":"2026-11-25T00:00:00Z","updatedBy":"x"},"effective":{}}`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	getenv := func(k string) string {
		return map[string]string{"XDS_ADMIN_URL": srv.URL, "XDS_ADMIN_TOKEN": "tok"}[k]
	}
	var out, errOut bytes.Buffer
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-per-viewer", "1/60s", "-captcha", "inherit"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if strings.Join(f.calls, "; ") != "GET /api/v1/admin/edge-settings/eu Bearer tok; PUT /api/v1/admin/edge-settings/eu Bearer tok" {
		t.Fatalf("calls %v", f.calls)
	}
	want := map[string]any{"perViewer": map[string]any{"max": 1.0, "windowSeconds": 60.0}, "perIp": map[string]any{"max": 50.0, "windowSeconds": 10.0}}
	if b1, b2 := mustJSON(f.put), mustJSON(want); b1 != b2 {
		t.Fatalf("PUT %s, want %s", b1, b2)
	}

	// Where the client address comes from: set, kept, inherited.
	f.get = `{"scope":"eu","override":{"scope":"eu","trustedHops":2,"captchaMode":"off","updatedAt":"2026-11-25T00:00:00Z","updatedBy":"x"},"effective":{}}`
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-proxy-protocol", "true"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if b1, b2 := mustJSON(f.put), mustJSON(map[string]any{"captchaMode": "off", "trustedHops": 2, "proxyProtocol": true}); b1 != b2 {
		t.Fatalf("PUT %s, want %s", b1, b2)
	}
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-trusted-hops", "0"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if b1, b2 := mustJSON(f.put), mustJSON(map[string]any{"captchaMode": "off", "trustedHops": 0}); b1 != b2 {
		t.Fatalf("PUT %s, want %s", b1, b2)
	}
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-trusted-hops", "inherit"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if b1, b2 := mustJSON(f.put), mustJSON(map[string]any{"captchaMode": "off"}); b1 != b2 {
		t.Fatalf("PUT %s, want %s", b1, b2)
	}
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-trusted-hops", "one"}, getenv, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "-trusted-hops") {
		t.Fatalf("bad hops: exit %d %s", code, errOut.String())
	}

	f.calls = nil
	if code := edgeSettingsCLI(context.Background(), []string{"-region", "eu", "-reset"}, getenv, &out, &errOut); code != 0 {
		t.Fatalf("reset exit %d: %s", code, errOut.String())
	}
	if len(f.calls) != 2 || !strings.HasPrefix(f.calls[0], "DELETE /api/v1/admin/edge-settings/eu") {
		t.Fatalf("reset calls %v", f.calls)
	}
	if code := edgeSettingsCLI(context.Background(), []string{"-per-ip", "lots"}, getenv, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "-per-ip") {
		t.Fatalf("bad limit: exit %d %s", code, errOut.String())
	}
	if code := edgeSettingsCLI(context.Background(), nil, func(string) string { return "" }, &out, &errOut); code != 2 {
		t.Fatalf("no token: exit %d", code)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
