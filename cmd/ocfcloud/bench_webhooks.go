package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/webhookbench"
)

func init() { benchCommands = append(benchCommands, benchWebhooksCmd) }

func benchWebhooksCmd() *cobra.Command {
	var o webhookbench.Options
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "Signed webhook delivery: events delivered per second and latency from event to webhook",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return webhookbench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().Float64Var(&o.Rate, "rate", 1000, "offered events per second of the latency runs")
	cmd.Flags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each latency run")
	cmd.Flags().IntVar(&o.Devices, "devices", 16, "simulated devices, one resource subscription each")
	cmd.Flags().IntVar(&o.Burst, "burst", 20000, "events of the throughput run")
	return cmd
}
