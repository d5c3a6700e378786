package main

import (
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"
)

// benchCommands are the `ocfcloud bench` subcommands; each bench_*.go file
// adds its own in init, so benchmarks stay independent of each other.
var benchCommands []func() *cobra.Command

func benchCmd() *cobra.Command {
	var cpuProfile string
	var stop func()
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a benchmark against an in-process cloud and print a Markdown table",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if cpuProfile == "" {
				return nil
			}
			f, err := os.Create(cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			stop = func() { pprof.StopCPUProfile(); _ = f.Close() }
			return nil
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if stop != nil {
				stop()
			}
		},
	}
	cmd.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	for _, sub := range benchCommands {
		cmd.AddCommand(sub())
	}
	return cmd
}
