package main

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/refit-dev/refit/config"
)

// tlsHint explains a server certificate that did not verify (sslmode
// verify-ca or verify-full), found by type in err's chain; "" otherwise.
// It is static text: nothing of the DSN.
func tlsHint(err error) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return " (the server's certificate is not signed by a CA in sslrootcert: point sslrootcert at the CA certificate that issued it)"
	case errors.As(err, &host):
		return " (the server's certificate does not name this host: with sslmode=verify-full the DSN's host must be one of the certificate's names or addresses)"
	case errors.As(err, &invalid):
		return " (the server's certificate is not valid here: expired, not yet valid, or not for TLS server use)"
	}
	return ""
}

// redactConnectError is config.RedactError with tlsHint: what refit shows
// of an error about connecting to dsn.
func redactConnectError(err error, dsn string) error {
	if err == nil {
		return nil
	}
	if hint := tlsHint(err); hint != "" {
		return fmt.Errorf("%w%s", config.RedactError(err, dsn), hint)
	}
	return config.RedactError(err, dsn)
}
