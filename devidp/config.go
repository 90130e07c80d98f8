package devidp

import (
	"fmt"
	"net"

	"github.com/tvvote/voting/envvars"
)

// Config is the development identity provider's environment.
type Config struct {
	// Addr is where the provider listens.
	Addr string `env:"DEVIDP_ADDR" envDefault:"127.0.0.1:8085"`
	// Issuer is the iss of minted tokens; empty: http://<Addr>/ (an Auth0 issuer ends with a slash).
	Issuer string `env:"DEVIDP_ISSUER"`
	// Audience is the aud of minted tokens.
	Audience string `env:"DEVIDP_AUDIENCE" envDefault:"https://votes.local/api"`
}

// LoadConfig reads the DEVIDP_* variables through lookup (os.LookupEnv, or a map in tests; an
// empty variable is unset) and reports every problem in one error.
func LoadConfig(lookup func(string) (string, bool)) (Config, error) {
	c, problems := envvars.Parse[Config](lookup, nil)
	if c.Issuer == "" {
		c.Issuer = "http://" + c.Addr + "/"
	}
	if err := envvars.Check("devidp", append(problems, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports the settings the provider cannot serve with.
func (c Config) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("DEVIDP_ADDR=%q must be host:port", c.Addr))
	}
	return envvars.Check("devidp", errs...)
}
