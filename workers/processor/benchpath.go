//go:build insertcopy

package processor

// The insert-path choice for the benchmark (loadtest/processor, built with -tags insertcopy by
// make bench-processor); no other build has it.

// Insert paths: both run the same statement and differ in how the batch reaches the server.
const (
	// InsertUnnest binds the batch as arrays: one round trip; what the processor uses.
	InsertUnnest = pathUnnest
	// InsertCopy streams the batch into a temporary table with COPY first.
	InsertCopy = pathCopy
)

// WithInsertPath selects how batches reach PostgreSQL, InsertUnnest or InsertCopy.
func (p *Processor) WithInsertPath(path string) *Processor { return p.withInsertPath(path) }
