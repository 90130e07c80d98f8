//go:build !crashtest

package processor

import "log/slog"

// afterCommit runs between a batch's COMMIT and its deletes. It does nothing: only the crash
// test's build (crashtest.go) puts a crash there.
func afterCommit(*slog.Logger) {}
