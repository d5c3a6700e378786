package main

import (
	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/gatewaybench"
)

func init() { benchCommands = append(benchCommands, benchStormCmd) }

func benchStormCmd() *cobra.Command {
	var o gatewaybench.StormOptions
	cmd := &cobra.Command{
		Use:   "reconnect-storm",
		Short: "Sign in many devices across gateway processes, kill and restart the gateways, time until all are signed in again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return gatewaybench.RunStorm(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Devices, "devices", 100_000, "devices signed in before the gateways restart")
	f.IntVar(&o.Gateways, "gateways", 6, "gateway processes (one process may hold 20,000 open files)")
	f.IntVar(&o.DeviceProcesses, "device-processes", 6, "processes simulating the devices")
	f.IntVar(&o.Parallel, "parallel", 256, "dials and sign-ins in flight per device process")
	f.StringVar(&o.SourceIPs, "source-ips", "127.0.0.1-127.0.0.254", "local addresses devices dial from")
	return cmd
}
