package server

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tvvote/voting/devstack"
)

// handshake runs one TLS handshake of client against the credentials and returns the server's
// error and the certificate the server showed.
func handshake(t *testing.T, m *MutualTLS, client *tls.Config) (error, *x509.Certificate) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan *x509.Certificate, 1)
	go func() {
		c := tls.Client(b, client)
		if c.Handshake() == nil {
			// TLS 1.3 sends the client's certificate after the client's handshake ends: read so the
			// server's verdict arrives.
			_, _ = c.Read(make([]byte, 1))
		}
		st := c.ConnectionState()
		if len(st.PeerCertificates) > 0 {
			done <- st.PeerCertificates[0]
		} else {
			done <- nil
		}
		c.Close()
	}()
	conn, _, err := m.Credentials().ServerHandshake(a)
	if err == nil {
		conn.Close()
	}
	return err, <-done
}

func clientConfig(t *testing.T, pki *devstack.PKI, name string) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(pki.CAFile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("ca: %v", err)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: devstack.XDSServerName, NextProtos: []string{"h2"}}
	if name != "" {
		x, err := pki.ClientTLS(name)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(x.CertFile, x.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// Only a client certificate of the CA is let in, and new files on disk are taken at the next
// handshake, without a restart.
func TestMutualTLSVerifiesClientsAndReloads(t *testing.T) {
	dir := t.TempDir()
	pki, err := devstack.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	m, err := NewMutualTLS(pki.ServerCertFile, pki.ServerKeyFile, pki.CAFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, m, clientConfig(t, pki, "edge-a")); err != nil {
		t.Fatalf("client of the CA refused: %v", err)
	}
	if err, _ := handshake(t, m, clientConfig(t, pki, "")); err == nil {
		t.Fatal("client without a certificate let in")
	}
	other, err := devstack.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	intruder := clientConfig(t, other, "intruder")
	intruder.RootCAs = clientConfig(t, pki, "").RootCAs
	if err, _ := handshake(t, m, intruder); err == nil {
		t.Fatal("client of another CA let in")
	}
	if !strings.Contains(logs.String(), "ADS TLS handshake failed") {
		t.Fatalf("refusals not logged: %s", logs.String())
	}

	// Rotation: a new CA and server certificate in the same files. The old clients are out, the
	// new ones in, and the server shows its new certificate.
	_, before := handshake(t, m, clientConfig(t, pki, "edge-a"))
	time.Sleep(10 * time.Millisecond) // a later mtime on coarse clocks
	rotated, err := devstack.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, m, intruder); err == nil {
		t.Fatal("client of another CA let in after the rotation")
	}
	err, after := handshake(t, m, clientConfig(t, rotated, "edge-b"))
	if err != nil {
		t.Fatalf("client of the rotated CA refused: %v", err)
	}
	if before == nil || after == nil || before.SerialNumber.Cmp(after.SerialNumber) == 0 {
		t.Fatalf("server certificate not reloaded: %v → %v", before, after)
	}

	// A broken file keeps the last good config.
	if err := os.WriteFile(filepath.Join(dir, "controlplane.pem"), []byte("not pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, m, clientConfig(t, rotated, "edge-c")); err != nil {
		t.Fatalf("a broken rotation dropped the last good config: %v", err)
	}
	if !strings.Contains(logs.String(), "keeping the last good certificate") {
		t.Fatalf("broken rotation not logged: %s", logs.String())
	}
}
