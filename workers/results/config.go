package results

import (
	"github.com/tvvote/voting/workers/results/resultsconfig"
)

// Config is the results worker's environment: the RESULTS_* variables, their defaults and
// checks live in resultsconfig.
type Config = resultsconfig.Config

// Defaults of the hub's intervals, for a Hub built in code (HubOptions): the tags' own.
var (
	configDefaults           = resultsconfig.Defaults()
	DefaultDBTimeout         = configDefaults.DBTimeout
	DefaultPollInterval      = configDefaults.PollInterval
	DefaultStreamInterval    = configDefaults.StreamInterval
	DefaultHeartbeatInterval = configDefaults.HeartbeatInterval
)

// LoadConfig reads RESULTS_* through lookup (os.LookupEnv in main, a map in tests), applies
// defaults and validates.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	return resultsconfig.Load(lookup)
}
