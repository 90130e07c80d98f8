package siteverify

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
)

// The site secret reaches the provider (see TestPassingTokenIsAdmittedAndTheProviderSawTheSecret)
// but neither Envoy's /config_dump nor any log: the filter config names the file it is in.
func TestSiteSecretIsInNoConfigDumpOrLog(t *testing.T) {
	if status, _, body := vote(t, "good-token-0123456789-abc"); status != http.StatusOK {
		t.Fatalf("vote: %d %s", status, body)
	}
	admin := fmt.Sprintf("http://127.0.0.1:%d", stack.Ports.EnvoyAdmin)
	sources := map[string]string{}
	for _, path := range []string{"/config_dump?include_eds", "/config_dump?resource=ecds_filters"} {
		resp, err := http.Get(admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sources[path] = string(b)
	}
	if !strings.Contains(sources["/config_dump?resource=ecds_filters"], `\"secretFile\":`) {
		t.Fatalf("the filter config names no secret file:\n%s", sources["/config_dump?resource=ecds_filters"])
	}
	logs, err := stack.Logs()
	if err != nil || len(logs) == 0 {
		t.Fatalf("no logs: %v", err)
	}
	maps.Copy(sources, logs)
	for where, text := range sources {
		if strings.Contains(text, secret) {
			t.Errorf("%s holds the site secret", where)
		}
	}
}
