package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

func deviceSimCmd() *cobra.Command {
	var cfg devicesim.Config
	var (
		caFile, logLevel, certFile, keyFile string
		count                               int
		codesFile, apiURL, username         string
		password, sourceIPs                 string
		idCACert, idCAKey                   string
		startRate                           float64
		ackLog                              string
	)
	cmd := &cobra.Command{
		Use:   "device-sim",
		Short: "Run simulated OCF devices (lights) that onboard with codes and stay connected",
		Long: `Run one simulated OCF device, or a fleet with --count N.

One device takes its onboarding code with --at. Codes are single use, so a
fleet needs one per device: --codes-file (one code per line) or
--api-url with --username/--password, which fetches a code per device through
POST /api/v1/onboarding-codes like the portal does. With --api-url, --cis
may be omitted: it comes from the onboarding answer.

For coaps+tcp, give --ca (the cloud CA) and an identity: --cert/--key for
one device, or --identity-ca-cert/--identity-ca-key (e.g. data/certs/ca.pem
and ca.key of a dev cloud) to issue every device its own uuid:<di>
certificate.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if ackLog != "" {
				w, err := openAckLog(ackLog)
				if err != nil {
					return err
				}
				defer w.Close()
				cfg.Acknowledged = w.write
			}
			if err := deviceSimValidate(cfg, count, codesFile, apiURL, username, certFile, keyFile); err != nil {
				return err
			}
			if caFile != "" || certFile != "" || idCACert != "" {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			if caFile != "" {
				pem, err := os.ReadFile(caFile)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("%s: no PEM certificate", caFile)
				}
				cfg.TLS.RootCAs = pool
			}
			if certFile != "" {
				pair, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					return fmt.Errorf("--cert/--key: %w", err)
				}
				cfg.TLS.Certificates = []tls.Certificate{pair}
			}
			var issuer *devicesim.IdentityIssuer
			if idCACert != "" {
				if issuer, err = devicesim.LoadIdentityIssuer(idCACert, idCAKey); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if count == 1 && cfg.AccessToken != "" {
				return runOneDevice(cmd, cfg, issuer)
			}
			var codes devicesim.CodeSource
			switch {
			case codesFile != "":
				fc, err := devicesim.LoadCodesFile(codesFile)
				if err != nil {
					return err
				}
				if fc.Len() < count {
					return fmt.Errorf("--codes-file has %d codes for %d devices (codes are single use)", fc.Len(), count)
				}
				codes = fc
			default:
				token, err := devicesim.PasswordToken(cmd.Context(), nil, apiURL, username, password)
				if err != nil {
					return err
				}
				codes = &devicesim.APICodes{BaseURL: apiURL, Token: token}
			}
			var ips []netip.Addr
			if sourceIPs == "" && count > 1 && loopbackCIS(cfg.CIS, apiURL) {
				sourceIPs = "127.0.0.1-127.0.0.254"
			}
			if sourceIPs != "" {
				if ips, err = devicesim.ParseSourceIPs(sourceIPs); err != nil {
					return err
				}
			}
			fmt.Fprintf(out, "starting %d devices\n", count)
			return devicesim.RunFleet(cmd.Context(), devicesim.FleetConfig{
				Count: count, Device: cfg, Codes: codes, SourceIPs: ips,
				Identities: issuer, StartRate: startRate, Progress: out,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.CIS, "cis", "", "cloud interface server URL, coap+tcp://host:port or coaps+tcp://host:port")
	f.StringVar(&cfg.APN, "apn", "ocfcloud", "authorization provider name")
	f.StringVar(&cfg.SID, "sid", "", "cloud id")
	f.StringVar(&cfg.AccessToken, "at", "", "onboarding code (one device)")
	f.StringVar(&cfg.DeviceID, "di", "", "device id (one device; default: random UUID)")
	f.StringVar(&cfg.Name, "name", "ocfcloud-sim", "device name")
	f.StringVar(&caFile, "ca", "", "cloud CA PEM file for coaps+tcp")
	f.StringVar(&certFile, "cert", "", "device identity certificate PEM (CN uuid:<di>) for coaps+tcp")
	f.StringVar(&keyFile, "key", "", "private key PEM of --cert")
	f.StringVar(&idCACert, "identity-ca-cert", "", "device CA certificate PEM: issue each device an identity certificate")
	f.StringVar(&idCAKey, "identity-ca-key", "", "private key PEM of --identity-ca-cert")
	f.DurationVar(&cfg.PingInterval, "ping-interval", 20*time.Second, "keepalive ping interval")
	f.DurationVar(&cfg.ChangeEvery, "change-every", 0, "toggle /light/1 on this schedule (0: never)")
	f.IntVar(&count, "count", 1, "number of devices, each with its own di and onboarding code")
	f.StringVar(&codesFile, "codes-file", "", "file with one onboarding code per line (fleets)")
	f.StringVar(&apiURL, "api-url", "", "cloud HTTP base URL to fetch one onboarding code per device (fleets)")
	f.StringVar(&username, "username", "admin", "user whose codes to fetch with --api-url")
	f.StringVar(&password, "password", os.Getenv("OCFCLOUD_PASSWORD"), "password of --username (default $OCFCLOUD_PASSWORD)")
	f.StringVar(&sourceIPs, "source-ips", "", `local addresses to dial from, e.g. "127.0.0.1-127.0.0.254" or "127.0.1.0/24" (default for loopback fleets: 127.0.0.1-127.0.0.254)`)
	f.Float64Var(&startRate, "start-rate", 500, "devices started per second")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&ackLog, "ack-log", "", "append a CSV line di,href,seq,sent-unix-ms,acked-unix-ms,json-value to this file for every /light/1 notification the cloud acknowledged (answered a ping sent after it)")
	return cmd
}

// ackLogWriter writes one line per acknowledged notification, each with a
// single write, so a reader never sees half a line except at the end.
type ackLogWriter struct {
	mu sync.Mutex
	f  *os.File
}

func openAckLog(path string) (*ackLogWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--ack-log: %w", err)
	}
	return &ackLogWriter{f: f}, nil
}

func (w *ackLogWriter) write(a devicesim.Ack) {
	line := fmt.Sprintf("%s,%s,%d,%d,%d,%s\n", a.DeviceID, a.Href, a.Seq, a.Sent.UnixMilli(), a.Acked.UnixMilli(), a.Value)
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.f.WriteString(line)
}

func (w *ackLogWriter) Close() error { return w.f.Close() }

func deviceSimValidate(cfg devicesim.Config, count int, codesFile, apiURL, username, certFile, keyFile string) error {
	var errs []error
	if count < 1 {
		errs = append(errs, errors.New("--count must be at least 1"))
	}
	if (certFile == "") != (keyFile == "") {
		errs = append(errs, errors.New("--cert and --key go together"))
	}
	if count > 1 && certFile != "" {
		errs = append(errs, errors.New("--cert names one device; a fleet needs --identity-ca-cert/--identity-ca-key"))
	}
	single := count == 1 && cfg.AccessToken != ""
	switch {
	case single && cfg.CIS == "":
		errs = append(errs, errors.New("--cis is required with --at"))
	case single:
	case count > 1 && cfg.AccessToken != "":
		errs = append(errs, errors.New("--at is single use: a fleet needs --codes-file or --api-url"))
	case codesFile == "" && apiURL == "":
		errs = append(errs, errors.New("give --at (one device), --codes-file or --api-url (codes from POST /api/v1/onboarding-codes)"))
	case codesFile != "" && cfg.CIS == "":
		errs = append(errs, errors.New("--codes-file needs --cis"))
	case apiURL != "" && username == "":
		errs = append(errs, errors.New("--api-url needs --username and --password"))
	}
	return errors.Join(errs...)
}

func runOneDevice(cmd *cobra.Command, cfg devicesim.Config, issuer *devicesim.IdentityIssuer) error {
	if cfg.DeviceID == "" {
		cfg.DeviceID = devicesim.NewDeviceID()
	}
	if issuer != nil {
		cert, err := issuer.Issue(cfg.DeviceID)
		if err != nil {
			return err
		}
		cfg.TLS.Certificates = []tls.Certificate{cert}
	}
	d, err := devicesim.New(cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "device %s connecting to %s\n", d.DeviceID(), cfg.CIS)
	go func() {
		select {
		case <-d.Ready():
			fmt.Fprintf(out, "device %s is onboarded and published /oic/d, /oic/p, /light/1\n", d.DeviceID())
		case <-cmd.Context().Done():
		}
	}()
	return d.Run(cmd.Context())
}

// loopbackCIS reports whether devices would dial a loopback address, where
// spreading over 127.0.0.x needs no configuration.
func loopbackCIS(cis, apiURL string) bool {
	raw := cis
	if raw == "" {
		raw = apiURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
