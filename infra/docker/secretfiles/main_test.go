package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteSecrets(t *testing.T) {
	dir := t.TempDir()
	env, err := writeSecrets(dir, []string{"XDS_GRPC_ADDR=0.0.0.0:18000", "SECRETFILE_XDS_TLS_KEY=-----BEGIN PRIVATE KEY-----\nk=\n"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(env, []string{"XDS_GRPC_ADDR=0.0.0.0:18000"}) {
		t.Fatalf("environment passed on: %q", env)
	}
	b, err := os.ReadFile(filepath.Join(dir, "xds-tls-key"))
	if err != nil || string(b) != "-----BEGIN PRIVATE KEY-----\nk=\n" {
		t.Fatalf("%q %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "xds-tls-key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}
