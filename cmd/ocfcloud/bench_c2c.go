package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/c2cbench"
)

func init() { benchCommands = append(benchCommands, benchC2CCmd) }

func benchC2CCmd() *cobra.Command {
	var o c2cbench.Options
	var role string
	cmd := &cobra.Command{
		Use:   "c2c",
		Short: "Twin reads and live updates through the C2C API, against a bare net/http ceiling",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if role != "" {
				// A server child process of the benchmark.
				return c2cbench.ServeRole(cmd.Context(), role, args, os.Stdin, cmd.OutOrStdout())
			}
			return c2cbench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.Workers, "workers", 64, "concurrent HTTP clients")
	cmd.Flags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measured run")
	cmd.Flags().Float64Var(&o.LiveRate, "live-rate", 2500, "offered rate of the live-update latency run (per second)")
	cmd.Flags().IntVar(&o.Devices, "devices", 16, "simulated devices that live updates are spread over")
	cmd.Flags().BoolVar(&o.InProcess, "in-process", false, "run the cloud and the ceiling in this process instead of child processes")
	cmd.Flags().StringVar(&role, "role", "", "internal: run a server child process")
	_ = cmd.Flags().MarkHidden("role")
	cmd.Flags().SetInterspersed(false)
	return cmd
}
