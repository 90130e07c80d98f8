package devstack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// toolPath finds a file that `make tools` installs below .tools/, with a hint when missing.
func toolPath(rel string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".tools", rel)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is missing: run `make tools` first", p)
	}
	return p, nil
}

// stateDir is the git-ignored folder for logs and data of local runs.
func stateDir(sub string) string {
	root, err := RepoRoot()
	if err != nil {
		root = os.TempDir()
	}
	return filepath.Join(root, ".state", sub)
}

// postgresBin finds a PostgreSQL server program from Debian's packages.
func postgresBin(name string) (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		return "", fmt.Errorf("PostgreSQL %s not found under /usr/lib/postgresql: run `make tools` first", name)
	}
	return matches[len(matches)-1], nil
}
