package envoymodule

import (
	"sync"
	"testing"
	"time"
)

// async never waits for a goroutine to become free: tasks that block each other all start.
func TestAsyncRunsEveryTaskConcurrently(t *testing.T) {
	for round := range 2 { // the second round runs on the first round's goroutines
		const n = 50
		var started, done sync.WaitGroup
		release := make(chan struct{})
		started.Add(n)
		done.Add(n)
		for range n {
			async(func() {
				started.Done()
				<-release
				done.Done()
			})
		}
		waitGroup(t, &started, "round %d: not every task started", round)
		close(release)
		waitGroup(t, &done, "round %d: not every task finished", round)
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, format string, args ...any) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf(format, args...)
	}
}
