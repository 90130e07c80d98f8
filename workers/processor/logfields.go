package processor

import "github.com/tvvote/voting/contract"

// requestIDs are the correlation ids of a batch's messages, for a line about the whole batch:
// each vote's id must be findable in the processor's log whatever happened to its batch.
func requestIDs(items []*inbound) []string {
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = stringAttr(it.msg, contract.AttrRequestID)
	}
	return ids
}
