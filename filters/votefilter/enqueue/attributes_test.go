package enqueue

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tvvote/voting/contract"
)

// The edge's trace context travels as a message attribute, never in the body, whose fields
// the processor parses strictly.
func TestTraceParentIsAnAttributeNotBody(t *testing.T) {
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	v := contract.QueuedVote{VoteID: "v", RequestID: "r", Region: "eu", TraceParent: tp}
	if got := aws.ToString(attributes(v)[contract.AttrTraceParent].StringValue); got != tp {
		t.Fatalf("traceparent attribute %q, want %q", got, tp)
	}
	body, _ := json.Marshal(v)
	if strings.Contains(string(body), tp) {
		t.Fatalf("traceparent in the body: %s", body)
	}
	if _, ok := attributes(contract.QueuedVote{Region: "eu"})[contract.AttrTraceParent]; ok {
		t.Fatal("an empty traceparent attribute for an untraced vote")
	}
}
