package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// MutualTLS is the server side of ADS over mutual TLS: the control plane's certificate and the
// CA every Envoy's client certificate must chain to, all PEM files. The files are looked at on
// every handshake (a stat each, and Envoys connect rarely) and read again when one changed, so a
// rotated certificate or CA takes effect for the next connection without a restart. A rotation
// caught half written keeps the last good pair and is tried again on the next handshake.
type MutualTLS struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger

	mu    sync.Mutex
	stamp string      // size and mtime of the three files the config was read from
	cfg   *tls.Config // the config of the last good read
}

// NewMutualTLS reads the three files once, so a start with bad files fails at once.
func NewMutualTLS(certFile, keyFile, caFile string, log *slog.Logger) (*MutualTLS, error) {
	m := &MutualTLS{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log}
	if _, err := m.current(); err != nil {
		return nil, err
	}
	return m, nil
}

// current is the config of the files as they are now, read again if they changed.
func (m *MutualTLS) current() (*tls.Config, error) {
	stamp, err := m.fileStamp()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil && stamp == m.stamp {
		return m.cfg, nil
	}
	cfg, rerr := m.read()
	if err = errors.Join(err, rerr); err != nil {
		if m.cfg == nil {
			return nil, fmt.Errorf("ADS mutual TLS: %w", err)
		}
		m.log.Error("ADS mutual TLS: keeping the last good certificate", "err", err)
		return m.cfg, nil
	}
	if m.cfg != nil {
		m.log.Info("ADS mutual TLS: certificate files reloaded")
	}
	m.stamp, m.cfg = stamp, cfg
	return cfg, nil
}

func (m *MutualTLS) fileStamp() (string, error) {
	var b strings.Builder
	for _, f := range []string{m.certFile, m.keyFile, m.caFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (m *MutualTLS) read() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(m.certFile, m.keyFile)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(m.caFile)
	if err != nil {
		return nil, err
	}
	cas := x509.NewCertPool()
	if !cas.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", m.caFile)
	}
	return &tls.Config{
		// Go picks 1.3 whenever the peer offers it (Envoy does); 1.2 is the floor.
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    cas,
		// gRPC insists on h2 being negotiated.
		NextProtos: []string{"h2"},
	}, nil
}

// Credentials are the gRPC server credentials; a failed handshake (no client certificate, one
// from another CA) is logged with the peer's address, as gRPC itself says nothing by default.
func (m *MutualTLS) Credentials() credentials.TransportCredentials {
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return m.current()
		},
	}
	return loggedCreds{credentials.NewTLS(base), m.log}
}

type loggedCreds struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, info, err := c.TransportCredentials.ServerHandshake(conn)
	// EOF is a port probe (a health check) hanging up, not a refused Envoy.
	if err != nil && !errors.Is(err, io.EOF) {
		c.log.Warn("ADS TLS handshake failed", "remote", conn.RemoteAddr().String(), "err", err)
	}
	return nc, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{c.TransportCredentials.Clone(), c.log}
}

// peerIdentity names the client certificate of a stream's connection, for the log: its subject
// and SANs; empty without TLS.
func peerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	c := info.State.PeerCertificates[0]
	id := c.Subject.String()
	var sans []string
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range c.URIs {
		sans = append(sans, u.String())
	}
	if len(sans) > 0 {
		id += " SAN=" + strings.Join(sans, ",")
	}
	return id
}
