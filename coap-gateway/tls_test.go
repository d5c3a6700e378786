package coapgateway_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
	"github.com/ocfcloud/ocfcloud/internal/ocf"
)

// identity issues an OCF identity certificate for di from the cloud's dev CA
// through a CSR, as a manufacturer or onboarding tool would.
func (c *testCloud) identity(di string) tls.Certificate {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "uuid:" + di}}, key)
	if err != nil {
		c.t.Fatal(err)
	}
	certPEM, err := c.Certs.SignDeviceCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), di, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
}

func (c *testCloud) deviceTLS(cert *tls.Certificate, maxVersion uint16) *tls.Config {
	cfg := &tls.Config{RootCAs: c.Certs.CAPool(), MinVersion: tls.VersionTLS12, MaxVersion: maxVersion}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func TestDeviceOnboardsOverMutualTLSWithItsIdentityCertificate(t *testing.T) {
	c := startTestCloud(t, nil)
	for name, version := range map[string]uint16{"TLS 1.2": tls.VersionTLS12, "TLS 1.3": tls.VersionTLS13} {
		t.Run(name, func(t *testing.T) {
			di := devicesim.NewDeviceID()
			cert := c.identity(di)
			code := c.code()
			c.runSim(code, di, func(cfg *devicesim.Config) {
				cfg.CIS = code.CISSecure
				cfg.TLS = c.deviceTLS(&cert, version)
			})
			// The gateway presents the cloud's certificate, CN uuid:<sid>.
			var state tls.ConnectionState
			conn, err := tls.Dial("tcp", c.coapsAddr(), c.deviceTLS(&cert, version))
			if err != nil {
				t.Fatal(err)
			}
			state = conn.ConnectionState()
			_ = conn.Close()
			if cn := state.PeerCertificates[0].Subject.CommonName; cn != "uuid:"+code.SID {
				t.Errorf("server certificate CN %q, want uuid:%s", cn, code.SID)
			}
			if state.Version != version {
				t.Errorf("negotiated %x, want %x", state.Version, version)
			}
		})
	}
}

func TestCertificateOfAnotherDeviceIsForbidden(t *testing.T) {
	c := startTestCloud(t, nil)
	certDI, claimed := devicesim.NewDeviceID(), devicesim.NewDeviceID()
	cert := c.identity(certDI)
	cc, err := dialRaw(t, c.coapsAddr(), c.deviceTLS(&cert, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	code, diag := postOn(t, cc, ocf.PathAccount, ocf.SignUpRequest{DeviceID: claimed, AuthProvider: "ocfcloud", AccessToken: c.code().AT})
	if code != codes.Forbidden || !bytes.Contains(diag, []byte(certDI)) {
		t.Fatalf("sign-up as another device: %v %q, want 4.03", code, diag)
	}
	code, _ = postOn(t, cc, ocf.PathSession, ocf.SessionRequest{DeviceID: claimed, UserID: "u", AccessToken: "t", Login: true})
	if code != codes.Forbidden {
		t.Fatalf("sign-in as another device: %v, want 4.03", code)
	}
	// The code was not spent: the rightful device can still use it.
	ok, err := dialRaw(t, c.coapsAddr(), c.deviceTLS(&cert, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.onboardRaw(ok, certDI)
}

func TestHandshakeNeedsACertificateFromTheDeviceCA(t *testing.T) {
	c := startTestCloud(t, nil)
	foreign := selfSignedIdentity(t, devicesim.NewDeviceID())
	for name, cfg := range map[string]*tls.Config{
		"no certificate":      c.deviceTLS(nil, 0),
		"foreign CA":          c.deviceTLS(&foreign, 0),
		"no certificate, 1.2": c.deviceTLS(nil, tls.VersionTLS12),
	} {
		cc, err := dialRaw(t, c.coapsAddr(), cfg, nil)
		if err != nil {
			continue // refused during the handshake (TLS 1.2)
		}
		// TLS 1.3 clients learn of the refusal on their first read.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cc.Post(ctx, ocf.PathAccount, ocf.ContentFormatCBOR, bytes.NewReader([]byte{0xa0}), ocfOpts()...)
		cancel()
		if err == nil {
			t.Errorf("%s: request answered", name)
		}
	}
}

func selfSignedIdentity(t *testing.T, di string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "uuid:" + di},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A fleet from one process: codes fetched through the API, an identity
// certificate per device, many source addresses, mutual TLS.
func TestFleetOnboardsOverTLSWithGeneratedIdentities(t *testing.T) {
	c := startTestCloud(t, nil)
	ips, err := devicesim.ParseSourceIPs("127.0.0.10-127.0.0.14")
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := devicesim.NewFleet(devicesim.FleetConfig{
		Count:      10,
		Device:     devicesim.Config{TLS: c.deviceTLS(nil, 0), Logger: quietLogger()},
		Codes:      &devicesim.APICodes{BaseURL: c.base, Token: c.token},
		Identities: &devicesim.IdentityIssuer{CA: c.Certs.CACert, Key: c.Certs.CAKey},
		SourceIPs:  ips,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleet: %v", err)
		}
	}()
	waitFor(t, "fleet online", 30*time.Second, func() bool { return fleet.Stats().Ready == 10 })
	for _, d := range fleet.Devices() {
		if _, st := c.deviceStatus(d.DeviceID()); st != "online" {
			waitFor(t, "device "+d.DeviceID()+" online in the C2C API", 10*time.Second, func() bool {
				_, st := c.deviceStatus(d.DeviceID())
				return st == "online"
			})
		}
	}
}
