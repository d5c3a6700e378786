package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/soak"
)

func init() { benchCommands = append(benchCommands, benchSoakCmd) }

func benchSoakCmd() *cobra.Command {
	var o soak.Options
	var maxGrowth float64
	var inProcess bool
	b := soak.DefaultBounds
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "A fleet of devices against the whole cloud for a long time; heap and goroutines must stay flat",
		Long: `Run a fresh in-process cloud with a fleet of simulated devices that keep
changing /light/1, print heap in use, goroutines and devices online at
--samples points, and exit non-zero with the reasons when the last sample
exceeds the first (taken one interval after every device is online) by more
than --max-heap-growth or --max-goroutine-growth, or when the cloud logged
more than --max-errors error lines (the devices' error lines count too).
The devices run in a child ` + "`ocfcloud device-sim`" + ` process unless --in-process,
so the samples measure the cloud alone. CI runs a 2-minute variant
(test/cluster/soak_test.go) with the same bounds.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if maxGrowth > 0 { // the one ratio of earlier versions, for scripts that pass it
				b.MaxHeapGrowth, b.MaxGoroutineGrowth = maxGrowth, maxGrowth-1
			}
			if !inProcess {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.FleetCommand = []string{exe, "device-sim"}
			}
			r, err := soak.Run(cmd.Context(), o, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if err := r.Verdict(b); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "soak: flat")
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 30*time.Minute, "how long to soak")
	f.IntVar(&o.Devices, "devices", 1000, "simulated devices")
	f.DurationVar(&o.ChangeEvery, "change-every", 10*time.Second, "how often each device changes /light/1")
	f.IntVar(&o.Samples, "samples", 10, "rows in the table; the first is the baseline of the verdict")
	f.BoolVar(&inProcess, "in-process", false, "run the devices in this process (measured with the cloud; at most ~9,000 within 20,000 open files) instead of a child `ocfcloud device-sim`")
	f.DurationVar(&o.OnboardTimeout, "onboard-timeout", 10*time.Minute, "how long every device may take to come online before the soak starts")
	f.Float64Var(&b.MaxHeapGrowth, "max-heap-growth", b.MaxHeapGrowth, "largest allowed last/first ratio of the heap in use")
	f.Float64Var(&b.MaxGoroutineGrowth, "max-goroutine-growth", b.MaxGoroutineGrowth, "largest allowed growth of the goroutine count, as a fraction of the first sample")
	f.IntVar(&b.MaxErrors, "max-errors", b.MaxErrors, "error lines the cloud may log")
	f.Float64Var(&maxGrowth, "max-growth", 0, "one last/first ratio for both heap and goroutines (overrides the two above)")
	return cmd
}
