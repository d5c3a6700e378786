package main

import (
	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/registrybench"
)

func init() { benchCommands = append(benchCommands, benchRegistryCmd) }

func benchRegistryCmd() *cobra.Command {
	var o registrybench.Options
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Events per second from publish to a durably applied twin, and latency",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return registrybench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.Devices, "devices", 1000, "devices the events are spread over")
	cmd.Flags().IntVar(&o.Events, "events", 100000, "events in the throughput run")
	cmd.Flags().Float64Var(&o.Rate, "rate", 2000, "offered events/s of the latency run")
	cmd.Flags().IntVar(&o.StartupDevices, "startup-devices", 100000, "registry size for the start-up run (-1 skips it)")
	return cmd
}
