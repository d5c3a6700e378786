package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/tokenbench"
)

func init() { benchCommands = append(benchCommands, benchTokenCmd) }

func benchTokenCmd() *cobra.Command {
	var o tokenbench.Options
	cmd := &cobra.Command{
		Use:   "token",
		Short: "client_credentials and refresh_token grants per second, against a bare ES256-signing ceiling",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return tokenbench.Run(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&o.Workers, "workers", 64, "concurrent HTTP clients")
	cmd.Flags().DurationVar(&o.Duration, "duration", 5*time.Second, "length of each measured run")
	cmd.Flags().StringVar(&o.DataDir, "data-dir", "", "directory for the embedded FerretDB (default: a temporary one)")
	cmd.Flags().BoolVar(&o.SkipRefresh, "skip-refresh", false, "leave out the refresh_token run")
	return cmd
}
