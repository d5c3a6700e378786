package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/gatewaybench"
)

func init() { benchCommands = append(benchCommands, benchGatewayCmd) }

func benchGatewayCmd() *cobra.Command {
	var o gatewaybench.Options
	var role string
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Measure the CoAP gateway: onboardings/s, memory per idle device, TLS handshake + sign-in/s",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "storm-devices" {
				// A device process of `bench reconnect-storm`.
				return gatewaybench.ServeStormDevices(cmd.Context(), args, os.Stdin, cmd.OutOrStdout())
			}
			if role != "" {
				// A server process of the memory measurement.
				return gatewaybench.ServeRole(cmd.Context(), role, args, os.Stdin, cmd.OutOrStdout())
			}
			return gatewaybench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Onboardings, "onboardings", 5000, "full onboardings to time (negative: skip)")
	f.IntVar(&o.IdleDevices, "idle-devices", 5000, "devices held signed in for the memory measurement (negative: skip)")
	f.IntVar(&o.Handshakes, "handshakes", 2000, "mutual TLS handshakes to time, bare and with sign-in (negative: skip)")
	f.IntVar(&o.Reconnects, "reconnects", 5000, "devices in the reconnect storm (sign-in only, stay connected; negative: skip)")
	f.IntVar(&o.Concurrency, "concurrency", 64, "devices working at once")
	f.StringVar(&o.SourceIPs, "source-ips", "127.0.0.1-127.0.0.254", "local addresses devices dial from")
	f.StringVar(&role, "role", "", "internal: run a server process of the memory measurement")
	_ = f.MarkHidden("role")
	// The server roles take their own flags after --.
	f.SetInterspersed(false)
	return cmd
}
