package certs_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/certs"
)

const deviceID = "3c5fbd8c-2f4e-4b8e-9c1d-6a7b8c9d0e1f"

func ensure(t testing.TB, o certs.Options) *certs.Bundle {
	t.Helper()
	b, err := certs.EnsureDev(o)
	if err != nil {
		t.Fatalf("EnsureDev: %v", err)
	}
	return b
}

// newDeviceCSR returns what an OCF device makes before sign-up: a P-256 key and
// a PEM CSR whose subject is its own claim, "uuid:<di>".
func newDeviceCSR(t testing.TB, di string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "uuid:" + di},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseCertPEM(t testing.TB, p []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(p)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("not a CERTIFICATE PEM: %q", p)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsureDevCreatesThenReloadsSamePKI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "certs")
	first := ensure(t, certs.Options{Dir: dir})

	if id, err := certs.DeviceIDFromCert(first.CACert); err != nil || id != first.CloudID {
		t.Fatalf("CA subject names %q (%v), want the cloud id %q", id, err, first.CloudID)
	}
	if !first.CACert.IsCA {
		t.Fatal("CA certificate is not a CA")
	}
	if got := first.CACert.NotAfter.Sub(first.CACert.NotBefore); got < 10*365*24*time.Hour {
		t.Errorf("CA lifetime %v, want 10 years", got)
	}
	if !first.CAKey.PublicKey.Equal(first.CACert.PublicKey) || first.CAKey.Curve != elliptic.P256() {
		t.Error("CA key is not the P-256 key of the CA certificate")
	}
	if c := parseCertPEM(t, first.CAPEM); !c.Equal(first.CACert) {
		t.Error("CAPEM is not the CA certificate")
	}
	if n := len(first.ServerCert.Certificate); n != 2 {
		t.Fatalf("server chain has %d certificates, want leaf + CA", n)
	}

	if m := mode(t, dir); m != 0o700 {
		t.Errorf("dir mode %v, want 0700", m)
	}
	for _, f := range []string{"ca.key", "server.key"} {
		if m := mode(t, filepath.Join(dir, f)); m != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, m)
		}
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if block, _ := pem.Decode(data); block == nil || block.Type != "PRIVATE KEY" {
			t.Errorf("%s is not a PKCS#8 PEM key", f)
		}
	}
	stored, _ := os.ReadFile(filepath.Join(dir, "cloud-id"))
	if strings.TrimSpace(string(stored)) != first.CloudID {
		t.Errorf("cloud-id file holds %q, want %q", stored, first.CloudID)
	}

	second := ensure(t, certs.Options{Dir: dir})
	if second.CloudID != first.CloudID {
		t.Errorf("cloud id changed across restarts: %s then %s", first.CloudID, second.CloudID)
	}
	if a, b := certs.Fingerprint(first.CACert.Raw), certs.Fingerprint(second.CACert.Raw); a != b {
		t.Errorf("CA changed across restarts: %s then %s", a, b)
	}
	if a, b := certs.Fingerprint(first.ServerCert.Certificate[0]), certs.Fingerprint(second.ServerCert.Certificate[0]); a != b {
		t.Errorf("a valid server certificate was reissued: %s then %s", a, b)
	}
}

func TestConfiguredCloudIDIsUsedAndGuarded(t *testing.T) {
	dir := t.TempDir()
	const sid = "00000000-0000-4000-8000-00000000c10d"
	b := ensure(t, certs.Options{Dir: dir, CloudID: sid})
	if b.CloudID != sid || b.CACert.Subject.CommonName != "uuid:"+sid {
		t.Fatalf("cloud id %q, CA CN %q; want %q", b.CloudID, b.CACert.Subject.CommonName, sid)
	}
	// Starting without the flag keeps the persisted id.
	if again := ensure(t, certs.Options{Dir: dir}); again.CloudID != sid {
		t.Errorf("cloud id %q after restart without flag, want %q", again.CloudID, sid)
	}
	_, err := certs.EnsureDev(certs.Options{Dir: dir, CloudID: "11111111-1111-4111-8111-111111111111"})
	if !errors.Is(err, certs.ErrCloudIDMismatch) {
		t.Errorf("another cloud id for the same PKI: err %v, want ErrCloudIDMismatch", err)
	}
	// Losing the cloud-id file neither changes the id nor lets another one in.
	if err := os.Remove(filepath.Join(dir, "cloud-id")); err != nil {
		t.Fatal(err)
	}
	_, err = certs.EnsureDev(certs.Options{Dir: dir, CloudID: "11111111-1111-4111-8111-111111111111"})
	if !errors.Is(err, certs.ErrCloudIDMismatch) {
		t.Errorf("another cloud id after cloud-id was lost: err %v, want ErrCloudIDMismatch", err)
	}
	if again := ensure(t, certs.Options{Dir: dir}); again.CloudID != sid {
		t.Errorf("cloud id %q after cloud-id was lost, want %q from the CA", again.CloudID, sid)
	}
	_, err = certs.EnsureDev(certs.Options{Dir: t.TempDir(), CloudID: "not-a-uuid"})
	if !errors.Is(err, certs.ErrInvalidDeviceID) {
		t.Errorf("non-UUID cloud id: err %v, want ErrInvalidDeviceID", err)
	}
}

func TestServerCertCoversHosts(t *testing.T) {
	dir := t.TempDir()
	def := ensure(t, certs.Options{Dir: dir})
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := def.ServerCert.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("default server certificate does not cover %s: %v", h, err)
		}
	}

	hosts := []string{"cloud.example.com", "10.1.2.3", "localhost", "[fd00::7]"}
	b := ensure(t, certs.Options{Dir: dir, Hosts: hosts})
	if certs.Fingerprint(b.ServerCert.Certificate[0]) == certs.Fingerprint(def.ServerCert.Certificate[0]) {
		t.Fatal("server certificate was not reissued when the hosts changed")
	}
	leaf, err := x509.ParseCertificate(b.ServerCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"cloud.example.com", "10.1.2.3", "localhost", "fd00::7"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("server certificate does not cover %s: %v", h, err)
		}
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err == nil {
		t.Error("server certificate still covers a host that was removed")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     b.CAPool(),
		DNSName:   "cloud.example.com",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Errorf("server certificate does not chain to the CA: %v", err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Error("server certificate lacks clientAuth, which OCF stacks require on end-entity certificates")
	}

	// The same hosts in another order and case are not a change.
	same := ensure(t, certs.Options{Dir: dir, Hosts: []string{"[fd00::7]", "LOCALHOST", "10.1.2.3", "cloud.example.com"}})
	if certs.Fingerprint(same.ServerCert.Certificate[0]) != certs.Fingerprint(b.ServerCert.Certificate[0]) {
		t.Error("server certificate reissued for the same hosts in another order")
	}

	if _, err := certs.EnsureDev(certs.Options{Dir: dir, Hosts: []string{"localhost:8443"}}); err == nil {
		t.Error("a host with a port was accepted")
	}
}

func TestExpiringServerCertIsRenewed(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) certs.Options {
		return certs.Options{Dir: dir, Now: func() time.Time { return t0.Add(d) }}
	}
	const day = 24 * time.Hour
	first := ensure(t, at(0))
	if got := first.ServerCert.Leaf.NotAfter.Sub(t0); got < 364*day || got > 366*day {
		t.Errorf("server certificate lasts %v from issue, want a year", got)
	}

	later := ensure(t, at(300*day))
	if certs.Fingerprint(later.ServerCert.Certificate[0]) != certs.Fingerprint(first.ServerCert.Certificate[0]) {
		t.Error("server certificate renewed while more than 30 days remained")
	}

	renewed := ensure(t, at(340*day))
	if certs.Fingerprint(renewed.ServerCert.Certificate[0]) == certs.Fingerprint(first.ServerCert.Certificate[0]) {
		t.Fatal("server certificate expiring within 30 days was not renewed")
	}
	if !renewed.ServerCert.Leaf.NotAfter.After(t0.Add(365 * day)) {
		t.Errorf("renewed certificate expires %v, not later than the old one", renewed.ServerCert.Leaf.NotAfter)
	}
	if certs.Fingerprint(renewed.CACert.Raw) != certs.Fingerprint(first.CACert.Raw) {
		t.Error("renewing the server certificate replaced the CA")
	}
	if _, err := renewed.ServerCert.Leaf.Verify(x509.VerifyOptions{
		Roots: renewed.CAPool(), CurrentTime: t0.Add(340 * day), DNSName: "localhost",
	}); err != nil {
		t.Errorf("renewed certificate does not verify: %v", err)
	}

	// Long expired (the laptop was off for two years) is renewed too.
	if stale := ensure(t, at(800*day)); !stale.ServerCert.Leaf.NotAfter.After(t0.Add(800 * day)) {
		t.Error("expired server certificate was not renewed")
	}

	// Near the end of its ten years the CA is re-dated with the same key and
	// subject, so certificates already on devices keep verifying.
	_, csr := newDeviceCSR(t, deviceID)
	devPEM, err := first.SignDeviceCSR(csr, deviceID, 3650*day)
	if err != nil {
		t.Fatal(err)
	}
	old := ensure(t, at(3640*day))
	if certs.Fingerprint(old.CACert.Raw) == certs.Fingerprint(first.CACert.Raw) {
		t.Fatal("CA expiring within 30 days was not re-dated")
	}
	if old.CloudID != first.CloudID || !old.CAKey.Equal(first.CAKey) {
		t.Error("re-dating the CA changed its cloud id or key")
	}
	if _, err := parseCertPEM(t, devPEM).Verify(x509.VerifyOptions{
		Roots: old.CAPool(), CurrentTime: t0.Add(3640 * day), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("device certificate does not verify against the re-dated CA: %v", err)
	}
}

func TestDeviceCSRIsSignedWithOCFIdentity(t *testing.T) {
	b := ensure(t, certs.Options{Dir: t.TempDir()})
	key, csr := newDeviceCSR(t, "ffffffff-ffff-4fff-bfff-ffffffffffff") // the device's claim is ignored
	certPEM, err := b.SignDeviceCSR(csr, deviceID, 24*time.Hour)
	if err != nil {
		t.Fatalf("SignDeviceCSR: %v", err)
	}
	dev := parseCertPEM(t, certPEM)
	if dev.Subject.CommonName != "uuid:"+deviceID {
		t.Errorf("subject CN %q, want uuid:%s", dev.Subject.CommonName, deviceID)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if !slices.Contains(dev.ExtKeyUsage, u) {
			t.Errorf("device certificate lacks ExtKeyUsage %v", u)
		}
	}
	if !key.PublicKey.Equal(dev.PublicKey) {
		t.Error("device certificate is not for the CSR's key")
	}
	if d := dev.NotAfter.Sub(time.Now()); d > 25*time.Hour || d < 23*time.Hour {
		t.Errorf("device certificate expires in %v, want 24h", d)
	}

	// The device dials the coaps+tcp listener with mutual TLS.
	peer, err := handshake(t, b.ServerTLSConfig(tls.RequireAndVerifyClientCert), &tls.Config{
		RootCAs:      b.CAPool(),
		ServerName:   "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{dev.Raw}, PrivateKey: key}},
	})
	if err != nil {
		t.Fatalf("mutual TLS handshake: %v", err)
	}
	if got, err := certs.DeviceIDFromCert(peer); err != nil || got != deviceID {
		t.Errorf("server sees device %q (%v), want %q", got, err, deviceID)
	}

	// A device certificate from another cloud's CA is refused.
	other := ensure(t, certs.Options{Dir: t.TempDir()})
	otherPEM, err := other.SignDeviceCSR(csr, deviceID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, b.ServerTLSConfig(tls.RequireAndVerifyClientCert), &tls.Config{
		RootCAs:      b.CAPool(),
		ServerName:   "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{parseCertPEM(t, otherPEM).Raw}, PrivateKey: key}},
	}); err == nil {
		t.Error("server accepted a device certificate from a foreign CA")
	}
}

// handshake runs a TLS handshake over an in-memory pipe and returns the
// client certificate the server verified.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	_ = sc.SetDeadline(deadline)
	_ = cc.SetDeadline(deadline)
	srv, cli := tls.Server(sc, serverCfg), tls.Client(cc, clientCfg)
	clientErr := make(chan error, 1)
	go func() {
		err := cli.Handshake()
		if err == nil {
			// TLS 1.3 reports a rejected client certificate on the first read.
			_, err = cli.Read(make([]byte, 1))
		}
		clientErr <- err
	}()
	if err := srv.Handshake(); err != nil {
		_ = cc.Close()
		<-clientErr
		return nil, err
	}
	_, _ = srv.Write([]byte{1})
	if err := <-clientErr; err != nil {
		return nil, err
	}
	peers := srv.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return nil, errors.New("no client certificate")
	}
	return peers[0], nil
}

func TestBadCSRIsRejected(t *testing.T) {
	b := ensure(t, certs.Options{Dir: t.TempDir()})
	_, good := newDeviceCSR(t, deviceID)
	goodBlock, _ := pem.Decode(good)

	tampered := slices.Clone(goodBlock.Bytes)
	tampered[len(tampered)-1] ^= 0xff

	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, edKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384CSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)

	pemOf := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	cases := []struct {
		name     string
		csr      []byte
		deviceID string
		want     error
		mention  string
	}{
		{"empty", nil, deviceID, certs.ErrInvalidCSR, "PEM"},
		{"not PEM", []byte("hello"), deviceID, certs.ErrInvalidCSR, "PEM"},
		{"raw DER", goodBlock.Bytes, deviceID, certs.ErrInvalidCSR, "PEM"},
		{"a certificate, not a CSR", b.CAPEM, deviceID, certs.ErrInvalidCSR, "CERTIFICATE REQUEST"},
		{"garbage in PEM", pemOf("CERTIFICATE REQUEST", []byte("garbage")), deviceID, certs.ErrInvalidCSR, "parse"},
		{"bad signature", pemOf("CERTIFICATE REQUEST", tampered), deviceID, certs.ErrInvalidCSR, "signature"},
		{"Ed25519 key", pemOf("CERTIFICATE REQUEST", edCSR), deviceID, certs.ErrInvalidCSR, "Ed25519"},
		{"P-384 key", pemOf("CERTIFICATE REQUEST", p384CSR), deviceID, certs.ErrInvalidCSR, "P-384"},
		{"device id not a UUID", good, "dev-1", certs.ErrInvalidDeviceID, "dev-1"},
		{"device id with uuid: prefix", good, "uuid:" + deviceID, certs.ErrInvalidDeviceID, "uuid:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := b.SignDeviceCSR(tc.csr, tc.deviceID, time.Hour)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if out != nil {
				t.Error("a certificate was returned with the error")
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not say what is wrong (%q)", err, tc.mention)
			}
		})
	}

	// An old-style PEM label from mbedTLS/OpenSSL is the same CSR.
	if _, err := b.SignDeviceCSR(pemOf("NEW CERTIFICATE REQUEST", goodBlock.Bytes), deviceID, 0); err != nil {
		t.Errorf("NEW CERTIFICATE REQUEST label: %v", err)
	}
}

func TestDeviceIDFromCertRejectsNonOCFNames(t *testing.T) {
	for _, cn := range []string{"", "device", deviceID, "uuid:", "uuid:" + deviceID + "0", "UUID:" + deviceID, "uuid:3c5fbd8c_2f4e_4b8e_9c1d_6a7b8c9d0e1f", "uuid:zc5fbd8c-2f4e-4b8e-9c1d-6a7b8c9d0e1f"} {
		if id, err := certs.DeviceIDFromCert(&x509.Certificate{Subject: pkix.Name{CommonName: cn}}); !errors.Is(err, certs.ErrInvalidDeviceID) {
			t.Errorf("CN %q: got %q, %v; want ErrInvalidDeviceID", cn, id, err)
		}
	}
	if _, err := certs.DeviceIDFromCert(nil); !errors.Is(err, certs.ErrInvalidDeviceID) {
		t.Errorf("nil certificate: %v", err)
	}
}

func TestFingerprintIsUppercaseColonHex(t *testing.T) {
	fp := certs.Fingerprint([]byte("abc"))
	const want = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
	if fp != want {
		t.Errorf("Fingerprint(abc) = %s, want %s", fp, want)
	}
	if !regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`).MatchString(certs.Fingerprint(nil)) {
		t.Error("fingerprint of empty input is malformed")
	}
}

func TestLostCACertIsReissuedFromItsKey(t *testing.T) {
	dir := t.TempDir()
	b := ensure(t, certs.Options{Dir: dir})
	_, csr := newDeviceCSR(t, deviceID)
	devPEM, err := b.SignDeviceCSR(csr, deviceID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	again := ensure(t, certs.Options{Dir: dir})
	if again.CloudID != b.CloudID {
		t.Errorf("cloud id changed: %s then %s", b.CloudID, again.CloudID)
	}
	if _, err := parseCertPEM(t, devPEM).Verify(x509.VerifyOptions{
		Roots: again.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("device certificate issued before does not verify against the reissued CA: %v", err)
	}

	// Without its key the CA cannot be recovered, and is not silently replaced.
	if err := os.Remove(filepath.Join(dir, "ca.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.EnsureDev(certs.Options{Dir: dir}); !errors.Is(err, certs.ErrCorruptPKI) {
		t.Errorf("CA without key: err %v, want ErrCorruptPKI", err)
	}
}

func FuzzSignDeviceCSR(f *testing.F) {
	b := ensure(f, certs.Options{Dir: f.TempDir()})
	_, good := newDeviceCSR(f, deviceID)
	f.Add(good)
	f.Add(b.CAPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := b.SignDeviceCSR(in, deviceID, time.Hour)
		if err != nil {
			if out != nil {
				t.Fatal("certificate returned with an error")
			}
			return
		}
		c := parseCertPEM(t, out)
		if id, err := certs.DeviceIDFromCert(c); err != nil || id != deviceID {
			t.Fatalf("issued certificate names %q (%v)", id, err)
		}
	})
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	b := ensure(t, certs.Options{Dir: dir})

	// The server certificate is derived state: a damaged one is replaced.
	if err := os.WriteFile(filepath.Join(dir, "server.pem"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	again := ensure(t, certs.Options{Dir: dir})
	if certs.Fingerprint(again.CACert.Raw) != certs.Fingerprint(b.CACert.Raw) {
		t.Error("replacing the server certificate replaced the CA")
	}
	if err := again.ServerCert.Leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}

	// The CA is the devices' trust anchor: damage is reported, never papered over.
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.EnsureDev(certs.Options{Dir: dir}); !errors.Is(err, certs.ErrCorruptPKI) || !strings.Contains(err.Error(), "ca.key") {
		t.Errorf("damaged ca.key: err %v, want ErrCorruptPKI naming the file", err)
	}
}
