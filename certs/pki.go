package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/ids"
)

// File names inside Options.Dir.
const (
	caCertFile     = "ca.pem"
	caKeyFile      = "ca.key"
	serverCertFile = "server.pem"
	serverKeyFile  = "server.key"
	cloudIDFile    = "cloud-id"
)

// Lifetimes of generated certificates.
const (
	caValidity            = 10 * 365 * 24 * time.Hour
	serverValidity        = 365 * 24 * time.Hour
	defaultDeviceValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a certificate is reissued.
	renewBefore = 30 * 24 * time.Hour
	// backdate covers devices and hosts whose clocks run a little behind ours.
	backdate = time.Hour
)

// defaultHosts are the server certificate SANs used when Options.Hosts is empty.
func defaultHosts() []string { return []string{"localhost", "127.0.0.1", "::1"} }

// Sentinel errors callers can branch on with errors.Is.
var (
	// ErrInvalidCSR: the CSR is not PEM, not a CSR, badly signed, or has a key other than ECDSA P-256.
	ErrInvalidCSR = errors.New("invalid certificate signing request")
	// ErrInvalidDeviceID: a device or cloud id is not a UUID, or a certificate CN is not "uuid:<uuid>".
	ErrInvalidDeviceID = errors.New("invalid device id")
	// ErrCloudIDMismatch: the configured cloud id differs from the one the existing PKI was made for.
	ErrCloudIDMismatch = errors.New("cloud id does not match existing PKI")
	// ErrCorruptPKI: a CA file is unreadable or inconsistent; the CA is never replaced silently.
	ErrCorruptPKI = errors.New("corrupt PKI files")
)

// Options for EnsureDev.
type Options struct {
	Dir     string   // e.g. ./data/certs; created 0700
	CloudID string   // the cloud's sid (a UUID); if empty, generated on first start and persisted in Dir/cloud-id
	Hosts   []string // DNS names / IPs for the server cert SANs; default {"localhost","127.0.0.1","::1"}
	Now     func() time.Time
}

// Bundle is the loaded PKI, safe for concurrent use. Its fields are
// read-only after EnsureDev; only the certificate ServerTLSConfig presents
// changes, when CurrentServerCert renews it.
type Bundle struct {
	CloudID    string
	CACert     *x509.Certificate
	CAKey      *ecdsa.PrivateKey
	CAPEM      []byte
	ServerCert tls.Certificate // leaf + CA chain, as loaded by EnsureDev

	now func() time.Time
	// Renewal while serving: the TLS configs read cur on each handshake and
	// reissue the server certificate into dir when it nears expiry.
	dir       string
	sans      sanSet
	mu        sync.Mutex // serialises renewals
	cur       atomic.Pointer[tls.Certificate]
	nextRetry time.Time // after a failed renewal; guarded by mu
}

// EnsureDev loads the PKI from o.Dir, generating whatever is missing: the
// cloud id, the CA (P-256, 10 years, CN "uuid:<cloud id>") and the server
// certificate (P-256, 1 year, SANs from o.Hosts). The server certificate is
// reissued when it expires within 30 days or its SANs differ from o.Hosts.
func EnsureDev(o Options) (*Bundle, error) {
	if o.Dir == "" {
		return nil, errors.New("certs: Options.Dir is empty")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = defaultHosts()
	}
	sans, err := parseHosts(hosts)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: create %s: %w", o.Dir, err)
	}
	now := o.Now()

	cloudID, err := ensureCloudID(o.Dir, o.CloudID)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	caCert, caKey, err := ensureCA(o.Dir, cloudID, now)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	serverCert, err := ensureServer(o.Dir, cloudID, caCert, caKey, sans, now)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	b := &Bundle{
		CloudID:    cloudID,
		CACert:     caCert,
		CAKey:      caKey,
		CAPEM:      encodeCertPEM(caCert.Raw),
		ServerCert: serverCert,
		now:        o.Now,
		dir:        o.Dir,
		sans:       sans,
	}
	b.cur.Store(&serverCert)
	return b, nil
}

// ensureCloudID reconciles the configured cloud id with the persisted one and
// persists the result. A CA already on disk is checked against it in ensureCA.
func ensureCloudID(dir, configured string) (string, error) {
	if configured != "" && !ids.IsUUID(configured) {
		return "", fmt.Errorf("cloud id %q: %w", configured, ErrInvalidDeviceID)
	}
	path := filepath.Join(dir, cloudIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		stored := strings.TrimSpace(string(b))
		if !ids.IsUUID(stored) {
			return "", fmt.Errorf("%s holds %q, not a UUID: %w", path, stored, ErrCorruptPKI)
		}
		if configured != "" && !strings.EqualFold(configured, stored) {
			return "", fmt.Errorf("configured %s, %s holds %s (remove %s to start a new PKI): %w",
				configured, path, stored, dir, ErrCloudIDMismatch)
		}
		return stored, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("read cloud id: %w", err)
	}
	id := configured
	// An existing CA already names the cloud (cloud-id was lost); keep its id
	// rather than orphan the devices, and refuse before persisting a mismatch.
	if c, err := readCertFile(filepath.Join(dir, caCertFile)); err == nil {
		if caID, err := DeviceIDFromCert(c); err == nil {
			if id != "" && !strings.EqualFold(id, caID) {
				return "", fmt.Errorf("configured %s, CA in %s is for %s (remove %s to start a new PKI): %w",
					id, dir, caID, dir, ErrCloudIDMismatch)
			}
			id = caID
		}
	}
	if id == "" {
		id = ids.New()
	}
	if err := writeFileAtomic(path, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write cloud id: %w", err)
	}
	return id, nil
}
