package main

import "github.com/spf13/cobra"

// benchCommands are the `ocfcloud bench` subcommands; each bench_*.go file
// adds its own in init, so benchmarks stay independent of each other.
var benchCommands []func() *cobra.Command

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a benchmark against an in-process or running cloud and print a table",
	}
	for _, sub := range benchCommands {
		cmd.AddCommand(sub())
	}
	return cmd
}
