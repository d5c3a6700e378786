package devicesim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned returns a throwaway ECDSA certificate valid for 127.0.0.1.
func selfSigned(t *testing.T, cn string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

func TestSimulatorConnectsOverMutualTLS(t *testing.T) {
	serverCert, serverLeaf := selfSigned(t, "cloud")
	deviceCert, _ := selfSigned(t, "device")
	f := newFakeCloudWith(t, &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	roots := x509.NewCertPool()
	roots.AddCert(serverLeaf)
	d, _ := startDevice(t, f, func(c *Config) {
		c.CIS = "coaps+tcp://" + f.addr
		c.TLS = &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{deviceCert}, MinVersion: tls.VersionTLS12}
	})
	waitReady(t, d, 10*time.Second)
	if n := f.peerCertificates(1); n != 1 {
		t.Errorf("cloud saw %d device certificates, want 1", n)
	}
	assertNoOptionProblems(t, f.requests())
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no cis":        {AccessToken: "c"},
		"bad scheme":    {CIS: "https://h:1", AccessToken: "c"},
		"no port":       {CIS: "coap+tcp://h", AccessToken: "c"},
		"tls no config": {CIS: "coaps+tcp://h:5684", AccessToken: "c"},
		"no code":       {CIS: "coap+tcp://h:5683"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	d, err := New(Config{CIS: "coap+tcp://h:5683", AccessToken: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.DeviceID()) != 36 || d.DeviceID()[14] != '4' {
		t.Errorf("generated di %q is not a UUID v4", d.DeviceID())
	}
	if _, _, name := d.Light(); name == "" {
		t.Error("light has no name")
	}
}
