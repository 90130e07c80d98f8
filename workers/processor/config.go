package processor

import (
	"time"

	"github.com/tvvote/voting/workers/processor/processorconfig"
)

// Config is everything the processor needs from its environment: the PROCESSOR_* variables,
// their defaults and checks live in processorconfig.
type Config = processorconfig.Config

// LoadConfig reads the PROCESSOR_* variables through lookup (os.LookupEnv in main, a map in
// tests), applies defaults and validates the result.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	return processorconfig.Load(lookup)
}

// LoadReplayConfig reads only what replay-dlq needs (the queues), so an operator can run it
// without database credentials.
func LoadReplayConfig(lookup func(string) (string, bool)) (Config, error) {
	return processorconfig.LoadReplay(lookup)
}

// withDefaults fills the zero values that would make no sense (no receiver, a zero timeout)
// for a Config built in code rather than by LoadConfig, from the same defaults. Zero stays
// meaningful where it is a valid setting: WaitTime (short polling), BatchMaxWait,
// VisibilityTimeout, PoisonRetryDelay.
func withDefaults(c Config) Config {
	d := processorconfig.Defaults()
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.Receivers, d.Receivers)
	setInt(&c.BatchMaxMessages, d.BatchMaxMessages)
	setInt(&c.Writers, d.Writers)
	setInt(&c.Deleters, d.Deleters)
	if c.ReceiveMaxMessages <= 0 {
		c.ReceiveMaxMessages = d.ReceiveMaxMessages
	}
	setDur(&c.BackoffMin, d.BackoffMin)
	setDur(&c.BackoffMax, max(d.BackoffMax, c.BackoffMin))
	setDur(&c.DBTimeout, d.DBTimeout)
	setDur(&c.ShutdownTimeout, d.ShutdownTimeout)
	setDur(&c.QueueStatsInterval, d.QueueStatsInterval)
	setDur(&c.ReconcileInterval, d.ReconcileInterval)
	setDur(&c.DedupTTL, d.DedupTTL)
	return c
}
