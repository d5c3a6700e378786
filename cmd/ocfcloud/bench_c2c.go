package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/c2cbench"
)

func init() { benchCommands = append(benchCommands, benchC2CCmd) }

func benchC2CCmd() *cobra.Command {
	var o c2cbench.Options
	cmd := &cobra.Command{
		Use:   "c2c",
		Short: "Twin reads and live updates through the C2C API, against a bare net/http ceiling",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c2cbench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.Workers, "workers", 64, "concurrent HTTP clients")
	cmd.Flags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measured run")
	cmd.Flags().Float64Var(&o.LiveRate, "live-rate", 2500, "offered rate of the live-update latency run (per second)")
	cmd.Flags().IntVar(&o.Devices, "devices", 16, "simulated devices that live updates are spread over")
	return cmd
}
