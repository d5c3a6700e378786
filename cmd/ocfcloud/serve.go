package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/cloud"
	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// exitDataDirUnusable is serve's exit code when the data dir cannot be used
// (missing and not creatable, not a directory, read-only, no permission, too
// little free space); any other failure exits 1. docs/deploy.md lists them.
const exitDataDirUnusable = 3

func serveCmd() *cobra.Command {
	var cfg cloud.Config
	var services, logLevel, pprofAddr string
	minFreeDisk := byteSize(platform.DefaultMinFreeDisk)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the cloud (all services with embedded NATS and database by default)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if services != "" && services != "all" {
				cfg.Services = strings.Split(services, ",")
			}
			// Configuration mistakes first (exit 1, all at once), then the
			// data dir, before anything starts: a read-only or full disk is
			// one clear line and exit code 3 instead of half-created
			// JetStream and SQLite files. The free-space minimum guards the
			// embedded stores only: with external NATS and MongoDB the data
			// dir holds just certificates and keys.
			if err := cfg.Validate(); err != nil {
				return err
			}
			minFree := uint64(minFreeDisk)
			if cfg.NATSURL != "" && cfg.MongoURI != "" {
				minFree = 0
			}
			if err := platform.CheckDataDir(dataDirOrDefault(cfg.DataDir), minFree); err != nil {
				if errors.Is(err, platform.ErrTooLittleFreeSpace) {
					err = fmt.Errorf("%w (--min-free-disk; 0 disables)", err)
				}
				fmt.Fprintln(os.Stderr, "ocfcloud:", err)
				os.Exit(exitDataDirUnusable)
			}
			// The embedded JetStream restarts after a write error once this
			// much is free again (at least 1 MiB, also when the check is off).
			cfg.MinFreeDisk = max(uint64(minFreeDisk), 1<<20)
			platform.TuneGC(log)
			if pprofAddr != "" {
				if err := servePprof(pprofAddr, log); err != nil {
					return err
				}
			}
			c, err := cloud.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "\nocfcloud is ready.\n  API and portal: %s\n", c.PublicURL())
			for _, a := range c.CoAPAddrs() {
				fmt.Fprintf(out, "  CoAP gateway:   %s\n", a)
			}
			if pw := c.GeneratedAdminPassword(); pw != "" {
				fmt.Fprintf(out, "  Admin login:    admin / %s   (generated now and shown once; keep it)\n", pw)
			}
			fmt.Fprintln(out)
			<-cmd.Context().Done()
			log.Info("shutting down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "data", "directory for the NATS store, the embedded database and certificates")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address for authz, the C2C API and the portal")
	f.StringVar(&cfg.CoAPAddr, "coap-addr", ":5683", `coap+tcp listen address ("-" disables)`)
	f.StringVar(&cfg.CoAPSAddr, "coaps-addr", ":5684", `coaps+tcp listen address ("-" disables)`)
	f.StringVar(&cfg.PublicURL, "public-url", "", "issuer and external base URL (default http://<http-addr>)")
	f.StringVar(&cfg.PublicHost, "public-host", "", "host name or IP that devices dial (default the CoAP listen host, or 127.0.0.1)")
	f.StringVar(&cfg.AuthzURL, "authz-url", "", "where to reach authz when it runs in another process")
	f.StringVar(&cfg.NATSURL, "nats-url", "", "external NATS URL (default: embedded nats-server with JetStream)")
	f.StringVar(&cfg.MongoURI, "mongo-uri", "", "external MongoDB URI (default: embedded FerretDB)")
	f.StringVar(&cfg.Database, "database", "ocfcloud", "MongoDB database name")
	f.StringVar(&cfg.AdminPassword, "admin-password", "", "password of user admin when it is created on first start (default: random, printed once)")
	f.StringVar(&services, "services", "all", "comma-separated services to run: authz,device-registry,c2c-api,coap-gateway")
	f.StringVar(&cfg.CloudID, "cloud-id", "", "the cloud's id (sid, a UUID); default generated once and kept in the data dir")
	f.StringVar(&cfg.CACertFile, "ca-cert", "", "PEM CA bundle handed to devices as cloudCA (default: the dev CA)")
	f.StringVar(&cfg.HTTPTLSCertFile, "tls-cert", "", "serve HTTPS with this certificate (PEM, leaf first)")
	f.StringVar(&cfg.HTTPTLSKeyFile, "tls-key", "", "key of --tls-cert")
	f.BoolVar(&cfg.HTTPTLS, "http-tls", false, "serve HTTPS with a certificate from the dev CA")
	f.StringVar(&cfg.AdvertiseCIS, "cis", "", "coap+tcp:// URL put into onboarding codes (default from --public-host and --coap-addr)")
	f.StringVar(&cfg.AdvertiseCISSecure, "cis-secure", "", "coaps+tcp:// URL put into onboarding codes")
	f.StringVar(&cfg.CoAPTLSCertFile, "coap-tls-cert", "", "gateway certificate for coaps+tcp (PEM, CN uuid:<cloud id>; default from the dev CA)")
	f.StringVar(&cfg.CoAPTLSKeyFile, "coap-tls-key", "", "key of --coap-tls-cert")
	f.StringVar(&cfg.DeviceCAFile, "device-ca", "", "PEM CAs that device identity certificates must chain to (default: the dev CA)")
	f.IntVar(&cfg.GatewayLimits.MaxConnections, "max-connections", 0, "most concurrent device connections (default 100000)")
	f.Float64Var(&cfg.GatewayLimits.ConnRatePerIP, "conn-rate-per-ip", 0, "new device connections per second from one address (default 50; negative disables)")
	f.IntVar(&cfg.GatewayLimits.MaxPendingPerDevice, "max-pending-per-device", 0, "requests in flight to one device (default 16)")
	f.DurationVar(&cfg.GatewayLimits.InactivityTimeout, "inactivity-timeout", 0, "drop a device connection silent this long (default 60s)")
	f.DurationVar(&cfg.GatewayLimits.SignInTimeout, "sign-in-timeout", 0, "close a device connection not signed in this long after connecting or signing out (default 60s; negative disables)")
	f.DurationVar(&cfg.GatewayLimits.WriteTimeout, "write-timeout", 0, "close a device connection that accepts no data this long while the gateway writes (default 30s; negative disables)")
	f.IntVar(&cfg.StreamReplicas, "stream-replicas", 1, "replicas of the event stream and KV buckets (3 on a NATS cluster)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "gateway liveness lease; devices of a gateway that stops renewing it go offline after this long (default 15s)")
	f.StringSliceVar(&cfg.CORSOrigins, "cors-origins", nil, `origins allowed to call the HTTP API from a browser ("*" for any)`)
	f.StringVar(&cfg.Webhooks.SecretsKeyFile, "webhook-secrets-key-file", "", "file with the key (64 hex chars or base64) that encrypts webhook signing secrets; the same on every c2c-api replica (default: generated once into <data-dir>/secrets.key)")
	f.DurationVar(&cfg.Webhooks.RetryPeriod, "webhook-retry-period", 24*time.Hour, "how long a failing webhook delivery is retried before it is dropped (audit-logged)")
	f.DurationVar(&cfg.Webhooks.Timeout, "webhook-timeout", 10*time.Second, "time limit of one webhook delivery attempt")
	f.StringSliceVar(&cfg.Webhooks.AllowCIDRs, "webhook-allow-cidrs", nil, "address ranges webhooks may reach even when denied (e.g. 10.1.0.0/16)")
	f.StringSliceVar(&cfg.Webhooks.DenyCIDRs, "webhook-deny-cidrs", nil, "address ranges webhooks may not reach, besides link-local and cloud metadata addresses (always denied unless allowed)")
	f.BoolVar(&cfg.Webhooks.DenyPrivate, "webhook-deny-private", false, "also deny loopback and private ranges (recommended when the cloud runs next to internal services)")
	f.Var(&minFreeDisk, "min-free-disk", "free space the data dir needs at start when NATS or the database is embedded (e.g. 64MiB, 1GiB; 0 disables); less exits with code 3; the embedded JetStream restarts after a full disk once this much is free again")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&pprofAddr, "pprof-addr", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060; off by default, never expose it")
	return cmd
}

func dataDirOrDefault(dir string) string {
	if dir == "" {
		return "data"
	}
	return dir
}

// byteSize is a flag value such as 64MiB.
type byteSize uint64

func (b *byteSize) String() string {
	switch n := uint64(*b); {
	case n == 0:
		return "0"
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	default:
		return fmt.Sprint(n)
	}
}

func (b *byteSize) Set(s string) error {
	n, err := platform.ParseByteSize(s)
	*b = byteSize(n)
	return err
}

func (b *byteSize) Type() string { return "size" }
