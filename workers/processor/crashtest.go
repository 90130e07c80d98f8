//go:build crashtest

package processor

import (
	"log/slog"
	"os"
)

// afterCommit dies like kill -9 between the first COMMIT and its DeleteMessageBatch, the window
// where exactly-once depends on the unique keys alone. Only the binary TestCrashBetweenCommitAndDelete
// builds with -tags crashtest has it.
func afterCommit(log *slog.Logger) {
	log.Warn("crashtest build: killing the process after commit, before delete")
	self, _ := os.FindProcess(os.Getpid())
	_ = self.Kill()
	select {} // SIGKILL is asynchronous; never run the delete
}
