package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testCloudID  = "2b1c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"
	testDeviceID = "3c5fbd8c-2f4e-4b8e-9c1d-6a7b8c9d0e1f"
)

func runCerts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := certsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func mustCerts(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCerts(t, args...)
	if err != nil {
		t.Fatalf("ocfcloud certs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestOperatorMakesProductionPKI follows docs/deploy.md: a CA, the gateway
// certificate, a device certificate from an openssl CSR, then checks.
func TestOperatorMakesProductionPKI(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl not found; .ci/run installs it")
		}
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	pki, gw, dev := filepath.Join(dir, "pki"), filepath.Join(dir, "gw"), filepath.Join(dir, "dev")

	out := mustCerts(t, "ca", "--out", pki)
	if !strings.Contains(out, "root CA SHA-256 fingerprint") {
		t.Errorf("ca output: %s", out)
	}
	if _, err := runCerts(t, "ca", "--out", pki); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second ca without --force: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(pki, "root.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("root.key mode: %v %v", fi, err)
	}

	mustCerts(t, "gateway", "--ca-dir", pki, "--cloud-id", testCloudID, "--hosts", "coap.example.com,203.0.113.9", "--out", gw)
	for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if _, err := os.Stat(filepath.Join(gw, f)); err != nil {
			t.Errorf("gateway Secret file %s: %v", f, err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		o, err := exec.Command(openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, o)
		}
		return string(o)
	}
	if o := run("verify", "-CAfile", filepath.Join(gw, "ca.crt"), "-untrusted", filepath.Join(gw, "tls.crt"), "-purpose", "sslserver", "-verify_hostname", "coap.example.com", filepath.Join(gw, "tls.crt")); !strings.Contains(o, ": OK") {
		t.Errorf("openssl verify gateway: %s", o)
	}
	if o := run("x509", "-in", filepath.Join(gw, "tls.crt"), "-noout", "-subject"); !strings.Contains(o, "CN = uuid:"+testCloudID) {
		t.Errorf("gateway subject: %s", o)
	}

	key, csr := filepath.Join(dir, "device.key"), filepath.Join(dir, "device.csr")
	run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
	run("req", "-new", "-key", key, "-subj", "/CN=uuid:"+testDeviceID, "-out", csr)
	mustCerts(t, "device", "--ca-dir", pki, "--device-id", testDeviceID, "--csr", csr, "--out", dev)
	if _, err := os.Stat(filepath.Join(dev, "tls.key")); err == nil {
		t.Error("a key was written for a CSR: the device keeps its own")
	}
	if o := run("verify", "-CAfile", filepath.Join(dev, "ca.crt"), "-untrusted", filepath.Join(dev, "tls.crt"), "-purpose", "sslclient", filepath.Join(dev, "tls.crt")); !strings.Contains(o, ": OK") {
		t.Errorf("openssl verify device: %s", o)
	}

	out = mustCerts(t, "verify", "--cert", filepath.Join(dev, "tls.crt"), "--ca", filepath.Join(pki, "root.pem"), "--profile", "device", "--id", testDeviceID)
	if !strings.Contains(out, "OK") || !strings.Contains(out, "uuid:"+testDeviceID) {
		t.Errorf("verify output: %s", out)
	}
	// The device certificate is no gateway certificate, and says why.
	out, err = runCerts(t, "verify", "--cert", filepath.Join(dev, "tls.crt"), "--ca", filepath.Join(pki, "root.pem"), "--profile", "gateway", "--id", testCloudID)
	if err == nil || !strings.Contains(out, "subject names "+testDeviceID) || !strings.Contains(out, "subject alternative names") {
		t.Errorf("device cert as gateway: err %v\n%s", err, out)
	}
	// A new intermediate keeps the root: the old device certificate still verifies.
	mustCerts(t, "intermediate", "--ca-dir", pki, "--force")
	mustCerts(t, "verify", "--cert", filepath.Join(dev, "tls.crt"), "--ca", filepath.Join(pki, "root.pem"), "--profile", "device")
	mustCerts(t, "gateway", "--ca-dir", pki, "--cloud-id", testCloudID, "--hosts", "coap.example.com", "--out", gw, "--force")
	mustCerts(t, "verify", "--cert", filepath.Join(gw, "tls.crt"), "--ca", filepath.Join(pki, "root.pem"), "--profile", "gateway", "--host", "coap.example.com")

	// Bad input is named.
	if _, err := runCerts(t, "gateway", "--ca-dir", pki, "--cloud-id", "sid-1", "--hosts", "h", "--out", filepath.Join(dir, "x")); err == nil || !strings.Contains(err.Error(), "sid-1") {
		t.Errorf("bad cloud id: %v", err)
	}
	if _, err := runCerts(t, "device", "--ca-dir", filepath.Join(dir, "nowhere"), "--device-id", testDeviceID, "--out", filepath.Join(dir, "y")); err == nil || !strings.Contains(err.Error(), "intermediate.pem") {
		t.Errorf("missing CA: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCerts(t, "verify", "--cert", filepath.Join(dir, "junk.pem")); err == nil || !strings.Contains(err.Error(), "bad PEM") {
		t.Errorf("junk certificate: %v", err)
	}
}
