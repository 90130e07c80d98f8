package devstack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tvvote/voting/envoy"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// pkiValidity is how long the local certificates live: a stack runs for hours, not days, and
// a leaked key from .state is worthless by tomorrow.
const pkiValidity = 24 * time.Hour

// XDSServerName is the name Envoys check on the local control plane's certificate.
const XDSServerName = "localhost"

// PKI is a throwaway CA for ADS over mutual TLS on loopback, with the control plane's server
// certificate (SANs localhost and 127.0.0.1) and client certificates for Envoys issued on
// demand. Keys are ECDSA P-256, files mode 0600 under Dir; nothing of it outlives the stack.
type PKI struct {
	Dir string
	// CAFile is the CA certificate: the control plane's client CA and the Envoys' trust anchor.
	CAFile string
	// ServerCertFile and ServerKeyFile are the control plane's.
	ServerCertFile, ServerKeyFile string

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

// NewPKI makes a fresh CA and control plane certificate in dir, replacing what was there.
func NewPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "controlplane.pem"), ServerKeyFile: filepath.Join(dir, "controlplane-key.pem")}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := certTemplate("devstack xDS CA")
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.MaxPathLenZero = true, true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.caKey = key
	if err := writePEM(p.CAFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	err = p.issue("controlplane", p.ServerCertFile, p.ServerKeyFile, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.DNSNames = []string{XDSServerName}
		c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ClientTLS issues a client certificate named name (its CN and DNS SAN) and returns what an
// Envoy's bootstrap needs to reach the control plane with it.
func (p *PKI) ClientTLS(name string) (*envoy.XDSTLS, error) {
	if p == nil {
		return nil, nil
	}
	cert, key := filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
	err := p.issue(name, cert, key, func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		c.DNSNames = []string{name}
	})
	if err != nil {
		return nil, err
	}
	return &envoy.XDSTLS{CertFile: cert, KeyFile: key, CAFile: p.CAFile, ServerName: XDSServerName}, nil
}

// serverTLS is the control plane's configuration for it; none without a PKI.
func (p *PKI) serverTLS() xdsconfig.GRPCTLSConfig {
	if p == nil {
		return xdsconfig.GRPCTLSConfig{}
	}
	return xdsconfig.GRPCTLSConfig{CertFile: p.ServerCertFile, KeyFile: p.ServerKeyFile, ClientCAFile: p.CAFile}
}

func (p *PKI) issue(cn, certFile, keyFile string, leaf func(*x509.Certificate)) error {
	if p.ca == nil {
		return errors.New("pki: no CA")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl, err := certTemplate(cn)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	leaf(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a reader that sees the new certificate finds its key already there.
	if err := writePEM(keyFile, "PRIVATE KEY", kder, 0o600); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", der, 0o644)
}

func certTemplate(cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: []string{"tvvote devstack"}},
		// A little in the past, for clocks a second apart.
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(pkiValidity)}, nil
}

// writePEM writes through a rename, so the control plane's reload never reads half a file.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return os.Rename(tmp, path)
}
