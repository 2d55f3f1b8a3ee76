package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
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

	"github.com/jackc/pgx/v5"
)

// CA is a throwaway certificate authority for TLS tests, made with
// crypto/x509 (no openssl needed).
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, what a client's sslrootcert holds.
	PEM []byte
}

// NewCA makes a self-signed CA named commonName, valid for a day.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pgtest: CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pgtest: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pgtest: CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// WriteFile writes the CA certificate (PEM) to path, readable by everyone
// (it is public).
func (ca *CA) WriteFile(path string) error {
	if err := os.WriteFile(path, ca.PEM, 0o644); err != nil {
		return fmt.Errorf("pgtest: write CA certificate: %w", err)
	}
	return nil
}

// issue makes a server certificate for hosts (DNS names or IP addresses)
// signed by ca, and its key; both PEM.
func (ca *CA) issue(hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pgtest: server key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("pgtest: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pgtest: server key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pgtest: serial number: %w", err)
	}
	return n, nil
}

// Names of the server's certificate and key in the data directory.
const (
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
)

// EnableTLS turns TLS on for a cluster started by Start: it issues a
// server certificate for localhost, 127.0.0.1 and ::1 signed by ca, writes
// it and its key into the data directory as PostgreSQL requires (the key
// 0600, both owned by the user postgres runs as, see dropPrivileges), sets
// ssl = on with ssl_cert_file and ssl_key_file (ALTER SYSTEM) and reloads
// the configuration, then waits until a connection with sslmode=require
// succeeds. Connections with sslmode=disable (DSN) keep working. An
// existing server (REFIT_TEST_DSN) is ErrExternal.
func (c *Cluster) EnableTLS(ctx context.Context, ca *CA) error {
	if c.external {
		return ErrExternal
	}
	certPEM, keyPEM, err := ca.issue("localhost", "127.0.0.1", "::1")
	if err != nil {
		return err
	}
	cred, err := dropPrivileges()
	if err != nil {
		return err
	}
	for name, content := range map[string][]byte{serverCertFile: certPEM, serverKeyFile: keyPEM} {
		path := filepath.Join(c.dataDir, name)
		if err := os.WriteFile(path, content, 0o600); err != nil {
			return fmt.Errorf("pgtest: write %s: %w", path, err)
		}
		// WriteFile's mode is only used when it creates the file.
		if err := os.Chmod(path, 0o600); err != nil {
			return fmt.Errorf("pgtest: chmod %s: %w", path, err)
		}
		if cred != nil {
			if err := os.Lchown(path, int(cred.Uid), int(cred.Gid)); err != nil {
				return fmt.Errorf("pgtest: chown %s: %w", path, err)
			}
		}
	}
	conn, err := c.admin.acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgtest: enable TLS: %w", err)
	}
	defer c.admin.release(conn)
	for _, stmt := range []string{
		"ALTER SYSTEM SET ssl_cert_file = '" + serverCertFile + "'",
		"ALTER SYSTEM SET ssl_key_file = '" + serverKeyFile + "'",
		"ALTER SYSTEM SET ssl = on",
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("pgtest: enable TLS: %s: %w", stmt, err)
		}
	}
	return c.waitTLS(ctx, ca)
}

// waitTLS waits until the reloaded server accepts TLS connections whose
// certificate verifies against ca (sslmode=verify-full): the postmaster
// reloads asynchronously, and keeps TLS off, logging why, when it cannot
// load the certificate or key.
func (c *Cluster) waitTLS(ctx context.Context, ca *CA) error {
	cfg, err := pgx.ParseConfig(c.DSN(adminDatabase))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	cfg.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	cfg.Fallbacks = nil
	cfg.ConnectTimeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			var ssl bool
			err = conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
			conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck // probing
			if err == nil && ssl {
				return nil
			}
			if err == nil {
				err = errors.New("the connection is not encrypted")
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: TLS not enabled after a reload: %w (last error: %v)\nserver log:\n%s", ctx.Err(), lastErr, c.logTail())
		case <-time.After(25 * time.Millisecond):
		}
	}
}
