package devstack

import (
	"os"
	"strings"

	"github.com/tvvote/voting/envvars"
)

// defineProgram registers one of our binaries with the environment rendered from its config
// struct (envvars.Render: the fields set, by their env tags), then extra raw KEY=VALUE pairs
// (Options.ControlPlaneEnv), which win. It returns the config as the program will load it from
// that environment, so a setting the program would refuse fails the start here, in its words.
func defineProgram[C any](s *Stack, name, bin string, cfg C, load func(func(string) (string, bool)) (C, error),
	extra ...string) (C, error) {
	env, err := envvars.Render(cfg)
	if err != nil {
		var zero C
		return zero, err
	}
	env = append(env, extra...)
	loaded, err := load(lookupIn(env))
	if err != nil {
		return loaded, err
	}
	s.define(name, bin, nil, env...)
	return loaded, nil
}

// lookupIn is a child's view of env: this process's environment with env over it, the last
// value of a name winning, as for the process.
func lookupIn(env []string) func(string) (string, bool) {
	m := map[string]string{}
	for _, kv := range append(os.Environ(), env...) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}
