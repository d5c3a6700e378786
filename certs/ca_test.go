package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocfcloud/ocfcloud/certs"
)

const cloudID = "2b1c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"

// opensslBin finds openssl. CI installs it (.ci/run), so there a missing
// binary fails the test; elsewhere the test is skipped with the reason.
func opensslBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl not found; .ci/run installs it")
		}
		t.Skip("openssl not installed: apt-get install openssl to run the cross-checks")
	}
	return p
}

func openssl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(opensslBin(t), args...).CombinedOutput()
	return string(out), err
}

func mustOpenSSL(t *testing.T, args ...string) string {
	t.Helper()
	out, err := openssl(t, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keyPEMOf(t *testing.T, k interface{ KeyPEM() ([]byte, error) }) []byte {
	t.Helper()
	b, err := k.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newPKI is what an operator makes once with `ocfcloud certs ca`: a root and
// an intermediate that issues everything else.
func newPKI(t *testing.T, now func() time.Time) (root, inter *certs.CA) {
	t.Helper()
	root, err := certs.NewRootCA(certs.CAOptions{CommonName: "uuid:" + cloudID, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	inter, err = root.NewIntermediate(certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return root, inter
}

func TestProductionPKIVerifiesWithOpenSSL(t *testing.T) {
	opensslBin(t)
	dir := t.TempDir()
	root, inter := newPKI(t, nil)
	rootFile := writeFile(t, dir, "root.pem", root.RootPEM())
	interFile := writeFile(t, dir, "intermediate.pem", inter.CertPEM())

	// The intermediate is a CA limited to end-entity certificates.
	out := mustOpenSSL(t, "verify", "-CAfile", rootFile, interFile)
	if !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify intermediate: %s", out)
	}
	text := mustOpenSSL(t, "x509", "-in", interFile, "-noout", "-text")
	for _, want := range []string{"CA:TRUE, pathlen:0", "Certificate Sign, CRL Sign", "ASN1 OID: prime256v1", "ecdsa-with-SHA256"} {
		if !strings.Contains(text, want) {
			t.Errorf("intermediate lacks %q:\n%s", want, text)
		}
	}

	gw, err := inter.IssueGatewayCert(cloudID, []string{"coap.example.com", "203.0.113.7"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	httpCert, err := inter.IssueHTTPCert([]string{"cloud.example.com"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := inter.IssueDeviceCert(deviceID, nil, certs.LeafOptions{Validity: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A CSR made by openssl, as a manufacturing line would.
	keyFile := filepath.Join(dir, "device.key")
	mustOpenSSL(t, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile)
	csrOut := mustOpenSSL(t, "req", "-new", "-key", keyFile, "-subj", "/CN=whatever-the-device-claims")
	fromCSR, err := inter.IssueDeviceCert(deviceID, []byte(csrOut), certs.LeafOptions{})
	if err != nil {
		t.Fatalf("sign openssl CSR: %v", err)
	}
	if fromCSR.Key != nil {
		t.Error("a key was returned for a CSR")
	}

	cases := []struct {
		name    string
		cert    *certs.Issued
		purpose string
		want    []string
	}{
		{"gateway", gw, "sslserver", []string{
			"CN = uuid:" + cloudID, "DNS:coap.example.com, IP Address:203.0.113.7",
			"Digital Signature, Key Agreement", "TLS Web Server Authentication, TLS Web Client Authentication, 1.3.6.1.4.1.44924.1.6",
			"CA:FALSE", "ASN1 OID: prime256v1", "Signature Algorithm: ecdsa-with-SHA256"}},
		{"http", httpCert, "sslserver", []string{"CN = cloud.example.com", "DNS:cloud.example.com", "TLS Web Server Authentication"}},
		{"device, new key", dev, "sslclient", []string{
			"CN = uuid:" + deviceID, "Digital Signature, Key Agreement",
			"TLS Web Server Authentication, TLS Web Client Authentication, 1.3.6.1.4.1.44924.1.6", "CA:FALSE", "ASN1 OID: prime256v1"}},
		{"device, openssl CSR", fromCSR, "sslclient", []string{"CN = uuid:" + deviceID, "Digital Signature, Key Agreement"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The leaf file holds the chain (leaf, intermediate) as a server sends it.
			leaf := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".pem", tc.cert.CertPEM())
			out := mustOpenSSL(t, "verify", "-CAfile", rootFile, "-untrusted", leaf, "-purpose", tc.purpose, leaf)
			if !strings.HasSuffix(strings.TrimSpace(out), ": OK") {
				t.Errorf("openssl verify: %s", out)
			}
			text := mustOpenSSL(t, "x509", "-in", leaf, "-noout", "-text")
			for _, want := range tc.want {
				if !strings.Contains(text, want) {
					t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(tc.name, "http") {
				if strings.Contains(text, "Key Agreement") {
					t.Error("HTTP certificate carries the OCF key agreement usage")
				}
			}
			// The same verdict from Go, with the profile checks.
			profile := map[string]certs.Profile{"gateway": certs.ProfileGateway, "http": certs.ProfileHTTP}[tc.name]
			if profile == "" {
				profile = certs.ProfileDevice
			}
			if err := certs.VerifyPEM(tc.cert.CertPEM(), root.RootPEM(), certs.VerifyOptions{Profile: profile}); err != nil {
				t.Errorf("certs.Verify: %v", err)
			}
		})
	}

	// The device's key from a new-key issue is PKCS#8 P-256 that openssl reads.
	keyPEM := keyPEMOf(t, dev)
	devKey := writeFile(t, dir, "dev.key", keyPEM)
	if out := mustOpenSSL(t, "pkey", "-in", devKey, "-noout", "-text"); !strings.Contains(out, "prime256v1") {
		t.Errorf("device key is not P-256:\n%s", out)
	}
	if _, err := fromCSR.KeyPEM(); err == nil {
		t.Error("KeyPEM of a CSR-issued certificate did not fail")
	}

	// openssl refuses the chain against another root: the check can fail.
	otherRoot, _ := newPKI(t, nil)
	other := writeFile(t, dir, "other-root.pem", otherRoot.RootPEM())
	gwFile := writeFile(t, dir, "gw-chain.pem", gw.CertPEM())
	if out, err := openssl(t, "verify", "-CAfile", other, "-untrusted", gwFile, gwFile); err == nil {
		t.Errorf("openssl verified the gateway against a foreign root: %s", out)
	}
	// And a device certificate is not fit as an HTTPS server's (no SAN).
	if out, err := openssl(t, "verify", "-CAfile", rootFile, "-untrusted", interFile, "-purpose", "sslserver", "-verify_hostname", "cloud.example.com", writeFile(t, dir, "d.pem", dev.CertPEM())); err == nil {
		t.Errorf("openssl accepted a device certificate for cloud.example.com: %s", out)
	}
}

func TestIssuedGatewayCertServesOCFMutualTLS(t *testing.T) {
	root, inter := newPKI(t, nil)
	gw, err := inter.IssueGatewayCert(cloudID, []string{"localhost"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := inter.IssueDeviceCert(deviceID, nil, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tlsCert := func(i *certs.Issued) tls.Certificate {
		c := tls.Certificate{PrivateKey: i.Key, Leaf: i.Cert, Certificate: [][]byte{i.Cert.Raw}}
		for _, ch := range i.Chain {
			c.Certificate = append(c.Certificate, ch.Raw)
		}
		return c
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Root)
	peer, err := handshake(t, &tls.Config{
		Certificates: []tls.Certificate{tlsCert(gw)},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{tlsCert(dev)}})
	if err != nil {
		t.Fatalf("handshake through the intermediate: %v", err)
	}
	if id, err := certs.DeviceIDFromCert(peer); err != nil || id != deviceID {
		t.Errorf("gateway sees %q (%v), want %s", id, err, deviceID)
	}
}

func TestVerifyNamesEachProblem(t *testing.T) {
	t0 := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	root, inter := newPKI(t, func() time.Time { return t0 })
	roots := []*x509.Certificate{root.Root}
	chain := []*x509.Certificate{inter.Cert}
	dev, err := inter.IssueDeviceCert(deviceID, nil, certs.LeafOptions{Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	httpCert, err := inter.IssueHTTPCert([]string{"cloud.example.com"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	csr384, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	if _, err := inter.IssueDeviceCert(deviceID, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr384}), certs.LeafOptions{}); !errors.Is(err, certs.ErrInvalidCSR) || !strings.Contains(err.Error(), "P-384") {
		t.Errorf("P-384 device CSR: %v, want ErrInvalidCSR naming P-384", err)
	}
	if _, err := inter.IssueDeviceCert(deviceID, nil, certs.LeafOptions{Key: certs.KeyOptions{Curve: elliptic.P384()}}); !errors.Is(err, certs.ErrKeyType) {
		t.Errorf("P-384 device key: %v, want ErrKeyType", err)
	}

	cases := []struct {
		name    string
		cert    *x509.Certificate
		opts    certs.VerifyOptions
		want    error
		mention string
	}{
		{"good device", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: roots, Intermediates: chain, Now: t0, ID: deviceID}, nil, ""},
		{"expired", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: roots, Intermediates: chain, Now: t0.Add(48 * time.Hour)}, certs.ErrExpired, "expired"},
		{"not yet valid", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: roots, Intermediates: chain, Now: t0.Add(-48 * time.Hour)}, certs.ErrNotYetValid, "clock"},
		{"missing intermediate", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: roots, Now: t0}, certs.ErrChain, "unknown authority"},
		{"other device", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Now: t0, ID: cloudID}, certs.ErrOCFProfile, cloudID},
		{"HTTP certificate as a device", httpCert.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Now: t0}, certs.ErrOCFProfile, "uuid:<uuid>"},
		{"HTTP certificate lacks OCF usages", httpCert.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Now: t0}, certs.ErrKeyUsage, "keyAgreement"},
		{"device certificate as HTTPS", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileHTTP, Now: t0}, certs.ErrKeyUsage, "subject alternative names"},
		{"leaf as CA", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileCA, Now: t0}, certs.ErrKeyUsage, "keyCertSign"},
		{"wrong host", httpCert.Cert, certs.VerifyOptions{Profile: certs.ProfileHTTP, Now: t0, DNSName: "evil.example.com"}, certs.ErrKeyUsage, "evil.example.com"},
		{"expired intermediate", dev.Cert, certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: roots, Intermediates: chain, Now: t0.Add(11 * 365 * 24 * time.Hour)}, certs.ErrExpired, "issuer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := certs.Verify(tc.cert, tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestParseRejectsBadInputClearly(t *testing.T) {
	opensslBin(t)
	dir := t.TempDir()
	rsaKey := filepath.Join(dir, "rsa.key")
	mustOpenSSL(t, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsaKey)
	edKey := filepath.Join(dir, "ed.key")
	mustOpenSSL(t, "genpkey", "-algorithm", "ED25519", "-out", edKey)
	secp256k1 := filepath.Join(dir, "k1.key")
	mustOpenSSL(t, "ecparam", "-name", "secp256k1", "-genkey", "-noout", "-out", secp256k1)
	sec1 := filepath.Join(dir, "p256.key")
	mustOpenSSL(t, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", sec1)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if k, err := certs.ParsePrivateKeyPEM(read(sec1)); err != nil || k.Curve != elliptic.P256() {
		t.Errorf("openssl SEC 1 P-256 key: %v", err)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		want    error
		mention string
	}{
		{"RSA", read(rsaKey), certs.ErrKeyType, "RSA"},
		{"Ed25519", read(edKey), certs.ErrKeyType, "Ed25519"},
		{"secp256k1", read(secp256k1), certs.ErrKeyType, "P-256"},
		{"empty", nil, certs.ErrBadPEM, "PRIVATE KEY"},
		{"a certificate", []byte(mustOpenSSL(t, "req", "-x509", "-key", sec1, "-subj", "/CN=x", "-days", "1")), certs.ErrBadPEM, "PRIVATE KEY"},
	} {
		if _, err := certs.ParsePrivateKeyPEM(tc.in); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("key %s: err %v, want %v mentioning %q", tc.name, err, tc.want, tc.mention)
		}
	}

	for _, tc := range []struct {
		name, in, mention string
	}{
		{"empty", "", "no PEM data"},
		{"text", "hello", "no PEM data"},
		{"a key", string(read(sec1)), "no CERTIFICATE block"},
		{"garbage DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1"},
	} {
		if _, err := certs.ParseCertificatesPEM([]byte(tc.in)); !errors.Is(err, certs.ErrBadPEM) || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("certificates %s: err %v, want ErrBadPEM mentioning %q", tc.name, err, tc.mention)
		}
	}
	// An openssl-made self-signed certificate with an RSA key is loaded and
	// then refused by the OCF profile, naming the key type.
	rsaCert := []byte(mustOpenSSL(t, "req", "-x509", "-key", rsaKey, "-subj", "/CN=uuid:"+deviceID, "-days", "1"))
	err := certs.VerifyPEM(rsaCert, nil, certs.VerifyOptions{Profile: certs.ProfileDevice})
	if !errors.Is(err, certs.ErrKeyType) || !strings.Contains(err.Error(), "RSA") {
		t.Errorf("RSA device certificate: %v", err)
	}
}

func TestLoadCAFromFilesIssues(t *testing.T) {
	dir := t.TempDir()
	root, inter := newPKI(t, nil)
	certFile := writeFile(t, dir, "intermediate.pem", inter.CertPEM())
	keyFile := writeFile(t, dir, "intermediate.key", keyPEMOf(t, inter))
	rootFile := writeFile(t, dir, "root.pem", root.RootPEM())
	loaded, err := certs.LoadCA(certFile, keyFile, rootFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Root.Equal(root.Root) || !loaded.Cert.Equal(inter.Cert) {
		t.Fatal("loaded CA differs")
	}
	gw, err := loaded.IssueGatewayCert(cloudID, []string{"localhost"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.VerifyPEM(gw.CertPEM(), root.RootPEM(), certs.VerifyOptions{Profile: certs.ProfileGateway, ID: cloudID, DNSName: "localhost"}); err != nil {
		t.Errorf("gateway from a loaded CA: %v", err)
	}
	// A key that is not the CA's is refused.
	other, _ := newPKI(t, nil)
	wrongKey := writeFile(t, dir, "wrong.key", keyPEMOf(t, other))
	if _, err := certs.LoadCA(certFile, wrongKey, ""); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched CA key: %v", err)
	}
	// A leaf is not a CA.
	leafFile := writeFile(t, dir, "leaf.pem", gw.CertPEM())
	leafKey := writeFile(t, dir, "leaf.key", keyPEMOf(t, gw))
	if _, err := certs.LoadCA(leafFile, leafKey, ""); !errors.Is(err, certs.ErrKeyUsage) {
		t.Errorf("leaf as CA: %v, want ErrKeyUsage", err)
	}
}

func TestServeRenewsServerCertBeforeExpiry(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	b := ensure(t, certs.Options{Dir: dir, Now: func() time.Time { return now }})
	cfg := b.ServerTLSConfig(tls.NoClientCert)
	client := &tls.Config{RootCAs: b.CAPool(), ServerName: "localhost", Time: func() time.Time { return now }}
	served := func() *x509.Certificate {
		t.Helper()
		return servedCert(t, cfg, client)
	}
	first := served()
	if !first.Equal(b.ServerCert.Leaf) {
		t.Fatal("the TLS config does not serve the loaded certificate")
	}
	now = t0.Add(200 * 24 * time.Hour)
	if !served().Equal(first) {
		t.Error("renewed with months left")
	}
	now = t0.Add(340 * 24 * time.Hour) // 25 days before expiry
	renewed := served()
	if renewed.Equal(first) {
		t.Fatal("a certificate 25 days from expiry was not renewed while serving")
	}
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after %v", renewed.NotAfter, first.NotAfter)
	}
	// It was written, so the next start loads it instead of issuing again.
	again := ensure(t, certs.Options{Dir: dir, Now: func() time.Time { return now }})
	if !again.ServerCert.Leaf.Equal(renewed) {
		t.Error("the renewed certificate was not persisted")
	}
}

// servedCert dials a TLS server on loopback and returns the certificate it presented.
func servedCert(t *testing.T, serverCfg, clientCfg *tls.Config) *x509.Certificate {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_ = c.(*tls.Conn).Handshake()
		_, _ = c.Read(make([]byte, 1))
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func TestFileCertificateFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	_, inter := newPKI(t, nil)
	issue := func() *certs.Issued {
		i, err := inter.IssueHTTPCert([]string{"localhost"}, certs.LeafOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	a, b := issue(), issue()
	certFile := writeFile(t, dir, "tls.crt", a.CertPEM())
	keyFile := writeFile(t, dir, "tls.key", keyPEMOf(t, a))
	fc, err := certs.LoadFileCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fc.Now = func() time.Time { return now }
	if !fc.Current().Leaf.Equal(a.Cert) {
		t.Fatal("not the loaded certificate")
	}
	// Half a rotation: new certificate, old key. The old pair keeps serving.
	writeFile(t, dir, "tls.crt", b.CertPEM())
	now = now.Add(time.Minute)
	if got := fc.Current(); !got.Leaf.Equal(a.Cert) {
		t.Error("a mismatched pair replaced the good one")
	}
	if fc.Err() == nil || !strings.Contains(fc.Err().Error(), "does not hold the key") {
		t.Errorf("Err = %v, want the mismatch", fc.Err())
	}
	writeFile(t, dir, "tls.key", keyPEMOf(t, b))
	now = now.Add(time.Minute)
	if got := fc.Current(); !got.Leaf.Equal(b.Cert) {
		t.Error("the rotated certificate was not picked up")
	}
	if len(fc.Current().Certificate) != 2 {
		t.Error("the chain (leaf + intermediate) was not kept")
	}
	if _, err := certs.LoadFileCertificate(filepath.Join(dir, "missing.crt"), keyFile); err == nil {
		t.Error("a missing file was accepted")
	}
	writeFile(t, dir, "bad.key", []byte("junk"))
	if _, err := certs.LoadFileCertificate(certFile, filepath.Join(dir, "bad.key")); !errors.Is(err, certs.ErrBadPEM) || !strings.Contains(err.Error(), "bad.key") {
		t.Errorf("junk key: %v, want ErrBadPEM naming bad.key", err)
	}
}

func FuzzParsePEM(f *testing.F) {
	root, err := certs.NewRootCA(certs.CAOptions{})
	if err != nil {
		f.Fatal(err)
	}
	key, _ := root.KeyPEM()
	f.Add(root.CertPEM())
	f.Add(key)
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		if cs, err := certs.ParseCertificatesPEM(in); err == nil {
			if len(cs) == 0 {
				t.Fatal("no certificates and no error")
			}
			_ = certs.Verify(cs[0], certs.VerifyOptions{Profile: certs.ProfileDevice, Roots: []*x509.Certificate{root.Cert}})
		} else if !errors.Is(err, certs.ErrBadPEM) {
			t.Fatalf("error %v is not ErrBadPEM", err)
		}
		if k, err := certs.ParsePrivateKeyPEM(in); err == nil && k == nil {
			t.Fatal("nil key and no error")
		} else if err != nil && !errors.Is(err, certs.ErrBadPEM) && !errors.Is(err, certs.ErrKeyType) {
			t.Fatalf("error %v is neither ErrBadPEM nor ErrKeyType", err)
		}
	})
}

func TestGatewayTLSFromFilesChecksWhatDevicesCheck(t *testing.T) {
	dir := t.TempDir()
	root, inter := newPKI(t, nil)
	gw, err := inter.IssueGatewayCert(cloudID, []string{"localhost"}, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, dir, "tls.crt", gw.CertPEM())
	keyFile := writeFile(t, dir, "tls.key", keyPEMOf(t, gw))
	// Devices may send only their leaf: the bundle holds intermediate and root.
	caFile := writeFile(t, dir, "device-ca.pem", append(inter.CertPEM(), root.RootPEM()...))

	cfg, _, err := certs.ServerTLSFromFiles(certs.FileTLSOptions{
		CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
		ClientAuth: tls.RequireAndVerifyClientCert, CloudID: cloudID,
	})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := inter.IssueDeviceCert(deviceID, nil, certs.LeafOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Root)
	peer, err := handshake(t, cfg, &tls.Config{
		RootCAs: pool, ServerName: "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key}},
	})
	if err != nil {
		t.Fatalf("device handshake with leaf only: %v", err)
	}
	if id, _ := certs.DeviceIDFromCert(peer); id != deviceID {
		t.Errorf("gateway sees %q", id)
	}

	// Another cloud's id in the CN: devices would refuse it, so does start-up.
	_, _, err = certs.ServerTLSFromFiles(certs.FileTLSOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
		ClientAuth: tls.RequireAndVerifyClientCert, CloudID: "00000000-0000-4000-8000-000000000000"})
	if !errors.Is(err, certs.ErrOCFProfile) || !strings.Contains(err.Error(), "tls.crt") {
		t.Errorf("wrong cloud id: %v", err)
	}
	// An HTTPS certificate is no gateway certificate.
	web, _ := inter.IssueHTTPCert([]string{"localhost"}, certs.LeafOptions{})
	webCert := writeFile(t, dir, "web.crt", web.CertPEM())
	webKey := writeFile(t, dir, "web.key", keyPEMOf(t, web))
	if _, _, err := certs.ServerTLSFromFiles(certs.FileTLSOptions{CertFile: webCert, KeyFile: webKey, ClientCAFile: caFile, CloudID: cloudID}); !errors.Is(err, certs.ErrKeyUsage) {
		t.Errorf("HTTPS certificate as gateway: %v", err)
	}
	if _, _, err := certs.ServerTLSFromFiles(certs.FileTLSOptions{CertFile: webCert, KeyFile: webKey}); err != nil {
		t.Errorf("HTTPS certificate for HTTPS: %v", err)
	}
	if _, _, err := certs.ServerTLSFromFiles(certs.FileTLSOptions{CertFile: certFile, KeyFile: keyFile, ClientAuth: tls.RequireAndVerifyClientCert}); err == nil {
		t.Error("mutual TLS without a client CA was accepted")
	}
	empty := writeFile(t, dir, "empty.pem", nil)
	if _, err := certs.LoadCertPoolFile(empty); !errors.Is(err, certs.ErrBadPEM) || !strings.Contains(err.Error(), "empty.pem") {
		t.Errorf("empty CA file: %v", err)
	}
}
