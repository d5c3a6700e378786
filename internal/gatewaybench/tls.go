package gatewaybench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"time"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

// tlsConfig is a throwaway PKI like the dev one: a CA, a server
// certificate CN uuid:<sid> and device identities CN uuid:<di>.
type tlsConfig struct {
	server  *tls.Config
	roots   *x509.CertPool
	devices []tlsDevice
}

type tlsDevice struct {
	di    string
	cert  tls.Certificate
	token string
}

const benchIdentities = 256

func newTLSConfig(be *backend) (*tlsConfig, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "uuid:" + devicesim.NewDeviceID()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	issuer := &devicesim.IdentityIssuer{CA: ca, Key: key}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "uuid:" + devicesim.NewDeviceID()},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, key)
	if err != nil {
		return nil, err
	}
	t := &tlsConfig{
		roots: pool,
		server: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, der}, PrivateKey: srvKey}},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
		},
	}
	for range benchIdentities {
		di := devicesim.NewDeviceID()
		cert, err := issuer.Issue(di)
		if err != nil {
			return nil, err
		}
		tok, err := be.mint(di)
		if err != nil {
			return nil, err
		}
		t.devices = append(t.devices, tlsDevice{di: di, cert: cert, token: tok})
	}
	return t, nil
}

// client returns a device's TLS config; no session cache, so every
// handshake is a full one, as for a device that just booted.
func (t *tlsConfig) client(d tlsDevice) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: t.roots, Certificates: []tls.Certificate{d.cert}}
}

func benchTLS(ctx context.Context, o Options, be *backend, ips []netip.Addr, w io.Writer) error {
	tc, err := newTLSConfig(be)
	if err != nil {
		return err
	}
	// Bare crypto/tls: the server completes the mutual handshake (client
	// certificate verified) and says so with one byte.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc.server)
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					_, _ = c.Write([]byte{1})
				}
			}()
		}
	}()
	bareAddr := ln.Addr().String()
	bareJob := func(i int) error {
		d := tc.devices[i%len(tc.devices)]
		dev, err := dialRaw(ctx, bareAddr, ips[i%len(ips)], tc.client(d))
		if err != nil {
			return err
		}
		defer dev.conn.Close()
		_ = dev.conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = dev.conn.Read(make([]byte, 1))
		return err
	}

	g, nc, err := newGateway(ctx, be, "", "127.0.0.1:0", tc)
	if err != nil {
		return err
	}
	defer nc.Close()
	defer g.Close()
	gwAddr := g.Addrs()[0].String()
	gwJob := func(i int) error {
		// The same client and dial as the bare job; then a CoAP sign-in
		// on the raw socket (rawdevice.go).
		d := tc.devices[i%len(tc.devices)]
		dev, err := dialRaw(ctx, gwAddr, ips[i%len(ips)], tc.client(d))
		if err != nil {
			return err
		}
		defer dev.conn.Close()
		return dev.signIn(d.di, benchUser, d.token)
	}
	// Alternate short rounds of both, so that load from other processes on
	// the machine weighs on both alike.
	const rounds = 4
	var bareElapsed, gwElapsed, bareCPU, gwCPU time.Duration
	var bareFailed, gwFailed int64
	var bareErr, gwErr error
	for r := range rounds {
		n := o.Handshakes / rounds
		if r == rounds-1 {
			n = o.Handshakes - n*(rounds-1)
		}
		c0 := cpuTime()
		e, f, err := parallel(ctx, n, o.Concurrency, w, "bare TLS", bareJob)
		c1 := cpuTime()
		bareElapsed, bareFailed, bareErr, bareCPU = bareElapsed+e, bareFailed+f, errors.Join(bareErr, err), bareCPU+c1-c0
		e, f, err = parallel(ctx, n, o.Concurrency, w, "TLS sign-in", gwJob)
		gwElapsed, gwFailed, gwErr, gwCPU = gwElapsed+e, gwFailed+f, errors.Join(gwErr, err), gwCPU+cpuTime()-c1
	}
	bare := float64(int64(o.Handshakes)-bareFailed) / bareElapsed.Seconds()
	gw := float64(int64(o.Handshakes)-gwFailed) / gwElapsed.Seconds()
	fmt.Fprintf(w, "mutual TLS handshakes, bare crypto/tls:                     %6.0f /s   (%d in %v, %d failed, 4 rounds alternating%s)\n", bare, o.Handshakes, bareElapsed.Round(time.Millisecond), bareFailed, cpuLine(bareCPU, int64(o.Handshakes)-bareFailed))
	fmt.Fprintf(w, "mutual TLS handshake + sign-in through the gateway:         %6.0f /s   (%d in %v, %d failed%s) = %.0f %% of bare\n", gw, o.Handshakes, gwElapsed.Round(time.Millisecond), gwFailed, cpuLine(gwCPU, int64(o.Handshakes)-gwFailed), 100*gw/bare)
	if bareCPU > 0 && gwCPU > 0 {
		fmt.Fprintf(w, "  by CPU per operation (robust to other load): gateway = %.0f %% of bare\n", 100*float64(bareCPU)/float64(gwCPU))
	}
	if bareFailed > 0 || gwFailed > 0 {
		return fmt.Errorf("TLS: failures (bare %d: %v; gateway %d: %v)", bareFailed, bareErr, gwFailed, gwErr)
	}
	return nil
}
