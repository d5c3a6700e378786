package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/devicesim"
)

func deviceSimCmd() *cobra.Command {
	var cfg devicesim.Config
	var caFile, logLevel string
	cmd := &cobra.Command{
		Use:   "device-sim",
		Short: "Run a simulated OCF device (a light) that onboards with a code and stays connected",
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg.Logger = log
			if cfg.CIS == "" || cfg.AccessToken == "" {
				return errors.New("--cis and --at are required (from POST /api/v1/onboarding-codes)")
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
				cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			}
			d, err := devicesim.New(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s connecting to %s\n", d.DeviceID(), cfg.CIS)
			go func() {
				select {
				case <-d.Ready():
					fmt.Fprintf(cmd.OutOrStdout(), "device %s is onboarded and published /oic/d, /oic/p, /light/1\n", d.DeviceID())
				case <-cmd.Context().Done():
				}
			}()
			return d.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.CIS, "cis", "", "cloud interface server URL, coap+tcp://host:port or coaps+tcp://host:port")
	f.StringVar(&cfg.APN, "apn", "ocfcloud", "authorization provider name")
	f.StringVar(&cfg.SID, "sid", "", "cloud id")
	f.StringVar(&cfg.AccessToken, "at", "", "onboarding code")
	f.StringVar(&cfg.DeviceID, "di", "", "device id (default: random UUID)")
	f.StringVar(&cfg.Name, "name", "ocfcloud-sim", "device name")
	f.StringVar(&caFile, "ca", "", "cloud CA PEM file for coaps+tcp")
	f.DurationVar(&cfg.PingInterval, "ping-interval", 20*time.Second, "keepalive ping interval")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
