package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/certs"
)

// certsCmd is the `ocfcloud certs` group: make the production PKI and check
// certificates. Output files use the Kubernetes TLS Secret names (tls.crt,
// tls.key, ca.crt), so a directory becomes a Secret with
// `kubectl create secret generic NAME --from-file=DIR`.
func certsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Create and check the CA, gateway, HTTPS and device certificates",
		Long: `Create and check certificates for a production deployment.

  ocfcloud certs ca --out pki                          # root + intermediate CA
  ocfcloud certs intermediate --ca-dir pki --force     # a new intermediate from the root
  ocfcloud certs gateway --ca-dir pki --cloud-id SID --hosts coap.example.com --out gw
  ocfcloud certs http --ca-dir pki --hosts cloud.example.com --out web
  ocfcloud certs device --ca-dir pki --device-id DI [--csr device.csr] --out dev
  ocfcloud certs verify --cert gw/tls.crt --ca pki/root.pem --profile gateway --id SID

Keys are ECDSA P-256 (OCF devices support no other curve). Existing files are
never overwritten unless --force is given.`,
	}
	cmd.AddCommand(certsCACmd(), certsIntermediateCmd(), certsGatewayCmd(), certsHTTPCmd(), certsDeviceCmd(), certsVerifyCmd())
	return cmd
}

// PKI directory layout written by `certs ca` and read by the issuing commands.
const (
	pkiRootCert  = "root.pem"
	pkiRootKey   = "root.key"
	pkiInterCert = "intermediate.pem"
	pkiInterKey  = "intermediate.key"
)

func certsCACmd() *cobra.Command {
	var out, cn, curve string
	var rootValidity, interValidity time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create a root CA and an intermediate CA that issues the other certificates",
		Long: `Create a root CA and an intermediate CA in --out:
  root.pem, root.key                  the trust anchor; keep root.key offline
  intermediate.pem, intermediate.key  issues gateway, HTTPS and device certificates
root.pem is what devices and clients trust (the onboarding code's cloud CA).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := certs.CurveByName(curve)
			if err != nil {
				return err
			}
			files := []string{pkiRootCert, pkiRootKey, pkiInterCert, pkiInterKey}
			if err := refuseOverwrite(out, files, force); err != nil {
				return err
			}
			root, err := certs.NewRootCA(certs.CAOptions{CommonName: cn, Validity: rootValidity, Key: certs.KeyOptions{Curve: c}})
			if err != nil {
				return err
			}
			interCN := ""
			if cn != "" {
				interCN = cn + " intermediate"
			}
			inter, err := root.NewIntermediate(certs.CAOptions{CommonName: interCN, Validity: interValidity, Key: certs.KeyOptions{Curve: c}})
			if err != nil {
				return err
			}
			rootKey, err := root.KeyPEM()
			if err != nil {
				return err
			}
			interKey, err := inter.KeyPEM()
			if err != nil {
				return err
			}
			if err := writeOut(out, map[string][]byte{
				pkiRootCert: root.RootPEM(), pkiRootKey: rootKey,
				pkiInterCert: inter.CertPEM(), pkiInterKey: interKey,
			}); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote %s\n", strings.Join(prefixAll(out, files), ", "))
			fmt.Fprintf(w, "root CA SHA-256 fingerprint: %s (valid until %s)\n", certs.Fingerprint(root.Cert.Raw), root.Cert.NotAfter.UTC().Format(time.DateOnly))
			fmt.Fprintf(w, "move %s offline once the intermediate exists\n", filepath.Join(out, pkiRootKey))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "pki", "directory to write to (created 0700)")
	f.StringVar(&cn, "cn", "", `root CA common name (default "ocfcloud root CA")`)
	f.StringVar(&curve, "curve", "P-256", "key curve: P-256 or P-384")
	f.DurationVar(&rootValidity, "root-validity", certs.DefaultRootValidity, "root CA lifetime")
	f.DurationVar(&interValidity, "intermediate-validity", certs.DefaultIntermediateValidity, "intermediate CA lifetime (capped to the root's)")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}

func certsIntermediateCmd() *cobra.Command {
	var dir, cn, curve string
	var validity time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "intermediate",
		Short: "Replace the intermediate CA with a new one signed by the root (rotation)",
		Long: `Sign a new intermediate CA with root.pem/root.key in --ca-dir and write
intermediate.pem/intermediate.key there. Devices and clients trust the root, so
certificates issued from the new intermediate are accepted without touching
them; reissue the gateway certificate afterwards.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := certs.CurveByName(curve)
			if err != nil {
				return err
			}
			if err := refuseOverwrite(dir, []string{pkiInterCert, pkiInterKey}, force); err != nil {
				return err
			}
			root, err := certs.LoadCA(filepath.Join(dir, pkiRootCert), filepath.Join(dir, pkiRootKey), "")
			if err != nil {
				return err
			}
			inter, err := root.NewIntermediate(certs.CAOptions{CommonName: cn, Validity: validity, Key: certs.KeyOptions{Curve: c}})
			if err != nil {
				return err
			}
			key, err := inter.KeyPEM()
			if err != nil {
				return err
			}
			if err := writeOut(dir, map[string][]byte{pkiInterCert: inter.CertPEM(), pkiInterKey: key}); err != nil {
				return err
			}
			describe(cmd.OutOrStdout(), inter.Cert)
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, %s\n", filepath.Join(dir, pkiInterCert), filepath.Join(dir, pkiInterKey))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "ca-dir", "pki", "directory written by `ocfcloud certs ca` (needs root.key)")
	f.StringVar(&cn, "cn", "", `intermediate CA common name (default "ocfcloud intermediate CA")`)
	f.StringVar(&curve, "curve", "P-256", "key curve: P-256 or P-384")
	f.DurationVar(&validity, "validity", certs.DefaultIntermediateValidity, "lifetime (capped to the root's)")
	f.BoolVar(&force, "force", false, "replace an existing intermediate")
	return cmd
}

// issuerFlags select the CA that issues a leaf: --ca-dir, or explicit files.
type issuerFlags struct {
	dir, cert, key, root string
	out                  string
	validity             time.Duration
	force                bool
}

func (o *issuerFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.dir, "ca-dir", "pki", "directory written by `ocfcloud certs ca` (intermediate.pem/.key, root.pem)")
	f.StringVar(&o.cert, "ca-cert", "", "issuing CA certificate (PEM, chain allowed); overrides --ca-dir")
	f.StringVar(&o.key, "ca-key", "", "issuing CA private key (PEM)")
	f.StringVar(&o.root, "ca-root", "", "root CA certificate when --ca-cert holds no root")
	f.StringVar(&o.out, "out", "", "output directory (tls.crt, tls.key, ca.crt)")
	f.DurationVar(&o.validity, "validity", certs.DefaultLeafValidity, "certificate lifetime (capped to the CA's)")
	f.BoolVar(&o.force, "force", false, "overwrite existing files")
	_ = cmd.MarkFlagRequired("out")
}

func (o *issuerFlags) load() (*certs.CA, error) {
	certFile, keyFile, rootFile := o.cert, o.key, o.root
	if certFile == "" {
		certFile, keyFile = filepath.Join(o.dir, pkiInterCert), filepath.Join(o.dir, pkiInterKey)
		if rootFile == "" {
			rootFile = filepath.Join(o.dir, pkiRootCert)
		}
	} else if keyFile == "" {
		return nil, errors.New("--ca-cert needs --ca-key")
	}
	return certs.LoadCA(certFile, keyFile, rootFile)
}

// writeIssued writes tls.crt (leaf + chain), tls.key (when the key is new)
// and ca.crt (the root), and checks the result against the profile.
func (o *issuerFlags) writeIssued(w io.Writer, ca *certs.CA, is *certs.Issued, profile certs.Profile, id string) error {
	if err := certs.VerifyPEM(is.CertPEM(), ca.RootPEM(), certs.VerifyOptions{Profile: profile, ID: id}); err != nil {
		return fmt.Errorf("issued certificate fails its own checks: %w", err)
	}
	files := map[string][]byte{"tls.crt": is.CertPEM(), "ca.crt": ca.RootPEM()}
	if is.Key != nil {
		k, err := is.KeyPEM()
		if err != nil {
			return err
		}
		files["tls.key"] = k
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	if err := refuseOverwrite(o.out, names, o.force); err != nil {
		return err
	}
	if err := writeOut(o.out, files); err != nil {
		return err
	}
	describe(w, is.Cert)
	fmt.Fprintf(w, "wrote %s/{%s}\n", o.out, strings.Join(sortedKeys(files), ","))
	return nil
}

func certsGatewayCmd() *cobra.Command {
	var o issuerFlags
	var cloudID string
	var hosts []string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Issue the coaps+tcp server certificate (CN uuid:<cloud id>, DNS/IP SANs)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := o.load()
			if err != nil {
				return err
			}
			is, err := ca.IssueGatewayCert(cloudID, hosts, certs.LeafOptions{Validity: o.validity})
			if err != nil {
				return err
			}
			return o.writeIssued(cmd.OutOrStdout(), ca, is, certs.ProfileGateway, cloudID)
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&cloudID, "cloud-id", "", "the cloud id (sid, a UUID); the same value as the chart's global.hubId")
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "DNS names and IP addresses devices dial (comma-separated)")
	_ = cmd.MarkFlagRequired("cloud-id")
	_ = cmd.MarkFlagRequired("hosts")
	return cmd
}

func certsHTTPCmd() *cobra.Command {
	var o issuerFlags
	var hosts []string
	cmd := &cobra.Command{
		Use:   "http",
		Short: "Issue an HTTPS server certificate for the API and portal",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := o.load()
			if err != nil {
				return err
			}
			is, err := ca.IssueHTTPCert(hosts, certs.LeafOptions{Validity: o.validity})
			if err != nil {
				return err
			}
			return o.writeIssued(cmd.OutOrStdout(), ca, is, certs.ProfileHTTP, "")
		},
	}
	o.register(cmd)
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "DNS names and IP addresses (comma-separated; the first is the CN)")
	_ = cmd.MarkFlagRequired("hosts")
	return cmd
}

func certsDeviceCmd() *cobra.Command {
	var o issuerFlags
	var deviceID, csrFile string
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Issue an OCF device identity certificate (CN uuid:<device id>) from a CSR or for a new key",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := o.load()
			if err != nil {
				return err
			}
			var csr []byte
			if csrFile != "" {
				if csr, err = os.ReadFile(csrFile); err != nil {
					return err
				}
			}
			is, err := ca.IssueDeviceCert(deviceID, csr, certs.LeafOptions{Validity: o.validity})
			if err != nil {
				return err
			}
			return o.writeIssued(cmd.OutOrStdout(), ca, is, certs.ProfileDevice, deviceID)
		},
	}
	o.register(cmd)
	cmd.Flags().StringVar(&deviceID, "device-id", "", "the device id (di, a UUID)")
	cmd.Flags().StringVar(&csrFile, "csr", "", "PEM CSR made by the device (P-256); without it a new key is made")
	_ = cmd.MarkFlagRequired("device-id")
	return cmd
}

func certsVerifyCmd() *cobra.Command {
	var certFile, caFile, profile, host, id string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check a certificate: chain, expiry, key usage and the OCF profile",
		Long: `Check a certificate and print every problem found. --cert may hold the
leaf followed by its intermediates. Profiles: gateway, device, http, ca.
Exits non-zero when anything is wrong.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := os.ReadFile(certFile)
			if err != nil {
				return err
			}
			chain, err := certs.ParseCertificatesPEM(data)
			if err != nil {
				return fmt.Errorf("%s: %w", certFile, err)
			}
			var roots []byte
			if caFile != "" {
				if roots, err = os.ReadFile(caFile); err != nil {
					return err
				}
			}
			w := cmd.OutOrStdout()
			describe(w, chain[0])
			if err := certs.VerifyPEM(data, roots, certs.VerifyOptions{Profile: certs.Profile(profile), DNSName: host, ID: id}); err != nil {
				var list interface{ Unwrap() []error }
				if errors.As(err, &list) {
					fmt.Fprintf(w, "%d problems:\n", len(list.Unwrap()))
					for _, e := range list.Unwrap() {
						fmt.Fprintf(w, "  - %v\n", e)
					}
				}
				return fmt.Errorf("%s is not a valid %s certificate", certFile, orDefault(profile, "any"))
			}
			if caFile == "" {
				fmt.Fprintln(w, "OK (chain not checked: no --ca)")
			} else {
				fmt.Fprintln(w, "OK")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "certificate PEM (leaf first, then intermediates)")
	f.StringVar(&caFile, "ca", "", "trusted root CA PEM; without it the chain is not checked")
	f.StringVar(&profile, "profile", "", "gateway, device, http or ca")
	f.StringVar(&host, "host", "", "a DNS name or IP the certificate must cover")
	f.StringVar(&id, "id", "", "the uuid the CN must name (cloud id for gateway, device id for device)")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

// describe prints what an operator checks first: who, issued by whom, for
// which names, until when, and the fingerprint to pin.
func describe(w io.Writer, c *x509.Certificate) {
	fmt.Fprintf(w, "subject:     %s\n", c.Subject)
	fmt.Fprintf(w, "issuer:      %s\n", c.Issuer)
	if names := append(slices.Clone(c.DNSNames), ipStrings(c.IPAddresses)...); len(names) > 0 {
		fmt.Fprintf(w, "names:       %s\n", strings.Join(names, ", "))
	}
	fmt.Fprintf(w, "valid:       %s to %s\n", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "sha256:      %s\n", certs.Fingerprint(c.Raw))
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func refuseOverwrite(dir string, names []string, force bool) error {
	if force {
		return nil
	}
	var existing []string
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			existing = append(existing, filepath.Join(dir, n))
		}
	}
	if len(existing) > 0 {
		return fmt.Errorf("refusing to overwrite %s (use --force)", strings.Join(existing, ", "))
	}
	return nil
}

func writeOut(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range files {
		perm := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			perm = 0o600
		}
		p := filepath.Join(dir, name)
		// Remove first so a new key never inherits an old file's looser mode.
		_ = os.Remove(p)
		if err := os.WriteFile(p, data, perm); err != nil {
			return err
		}
	}
	return nil
}

func prefixAll(dir string, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(dir, n)
	}
	return out
}

func sortedKeys(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
