package results

import (
	"errors"
	"fmt"
	"time"
)

// Config is the results worker's environment. LoadConfig is the one place that knows the
// variable names and defaults.
type Config struct {
	DatabaseURL string        // RESULTS_DATABASE_URL, required
	ListenAddr  string        // RESULTS_LISTEN_ADDR
	DBTimeout   time.Duration // RESULTS_DB_TIMEOUT: per-request database deadline
}

// Defaults. 8082 is the port in the results contract's servers list.
const (
	DefaultListenAddr = "127.0.0.1:8082"
	DefaultDBTimeout  = 2 * time.Second
)

// LoadConfig reads RESULTS_* through lookup (os.LookupEnv in main, a map in tests), applies
// defaults and validates.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	get := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	cfg := Config{
		DatabaseURL: get("RESULTS_DATABASE_URL", ""),
		ListenAddr:  get("RESULTS_LISTEN_ADDR", DefaultListenAddr),
	}
	s := get("RESULTS_DB_TIMEOUT", DefaultDBTimeout.String())
	d, err := time.ParseDuration(s)
	if err != nil {
		return Config{}, fmt.Errorf("RESULTS_DB_TIMEOUT: %q is not a duration (e.g. 2s)", s)
	}
	cfg.DBTimeout = d
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate fails fast on settings the server cannot start with.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("RESULTS_DATABASE_URL is required"))
	}
	if c.ListenAddr == "" {
		errs = append(errs, errors.New("RESULTS_LISTEN_ADDR must not be empty"))
	}
	if c.DBTimeout <= 0 {
		errs = append(errs, fmt.Errorf("RESULTS_DB_TIMEOUT must be positive, got %s", c.DBTimeout))
	}
	return errors.Join(errs...)
}
