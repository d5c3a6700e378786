package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/soak"
)

func init() { benchCommands = append(benchCommands, benchSoakCmd) }

func benchSoakCmd() *cobra.Command {
	var o soak.Options
	var maxGrowth float64
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "A fleet of devices against the whole cloud for a long time; heap and goroutines must stay flat",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := soak.Run(cmd.Context(), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if r.HeapGrowth > maxGrowth || r.GoroutineGrowth > maxGrowth || r.Errors > 0 {
				return fmt.Errorf("not flat: heap x%.2f, goroutines x%.2f, %d errors logged (limit x%.2f, 0 errors)", r.HeapGrowth, r.GoroutineGrowth, r.Errors, maxGrowth)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 30*time.Minute, "how long to soak")
	f.IntVar(&o.Devices, "devices", 1000, "simulated devices")
	f.DurationVar(&o.ChangeEvery, "change-every", 10*time.Second, "how often each device changes /light/1")
	f.IntVar(&o.Samples, "samples", 10, "rows in the table")
	f.Float64Var(&maxGrowth, "max-growth", 1.5, "largest allowed last/first ratio of heap and goroutines")
	return cmd
}
