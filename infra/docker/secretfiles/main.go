// Command secretfiles is the control plane image's entrypoint: it writes each SECRETFILE_<NAME>
// variable (a secret ECS took from Secrets Manager) to /run/secrets/<name> (lower case, "_" as
// "-"), mode 0600, removes those variables and replaces itself with the program in its
// arguments. The control plane reads secrets from files only, as the edge image's shell
// entrypoint arranges for Envoy; the control plane's image has no shell, hence this.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

const (
	prefix = "SECRETFILE_"
	dir    = "/run/secrets"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: secretfiles PROGRAM [ARG...]")
		os.Exit(2)
	}
	env, err := writeSecrets(dir, os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "secretfiles:", err)
		os.Exit(1)
	}
	err = syscall.Exec(os.Args[1], os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "secretfiles: exec", os.Args[1], err)
	os.Exit(1)
}

// writeSecrets writes the secret variables of environ under dir and returns the others.
func writeSecrets(dir string, environ []string) ([]string, error) {
	var keep []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, prefix) || name == prefix {
			keep = append(keep, kv)
			continue
		}
		file := filepath.Join(dir, strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-"))
		// Written beside and renamed over, so a reader never sees half a file.
		if err := os.WriteFile(file+".new", []byte(value), 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(file+".new", file); err != nil {
			return nil, err
		}
	}
	return keep, nil
}
