package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The control plane ships the vote filter's configuration but must not link the filter's
// runtime: its config type lives in a package of its own (edgeconfig) for that reason.
func TestLinksNoEdgeRuntime(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/redis/", "/filters/votefilter/dedup", "/filters/votefilter/captcha",
			"/filters/votefilter/enqueue", "/filters/votefilter/envoymodule", "github.com/aws/aws-sdk-go-v2/service/sqs"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("the control plane links %s", pkg)
			}
		}
		if pkg == "github.com/tvvote/voting/filters/votefilter" {
			t.Errorf("the control plane links the vote filter's admission logic")
		}
	}
}
