package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/floodbench"
)

func init() { benchCommands = append(benchCommands, benchFloodCmd) }

func benchFloodCmd() *cobra.Command {
	var o floodbench.Options
	cmd := &cobra.Command{
		Use:   "coap-flood",
		Short: "Connections that never sign in against a real gateway: memory per connection, signed-in devices' latency before vs during, what the gateway closes",
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Progress = os.Stderr
			_, err := floodbench.Run(cmd.Context(), o, cmd.OutOrStdout())
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Idle, "connections", 10_000, "connections that never sign in")
	f.IntVar(&o.Garbage, "garbage", 0, "of which send garbage first (default connections/10; negative: none)")
	f.IntVar(&o.Devices, "devices", 4, "signed-in devices working through the flood")
	f.DurationVar(&o.Before, "before", 0, "how long the devices are measured before the flood (default 5s)")
	f.DurationVar(&o.SignInTimeout, "sign-in-timeout", 0, "the gateway's SignInTimeout (default 20s)")
	f.DurationVar(&o.InactivityTimeout, "inactivity-timeout", 0, "the gateway's InactivityTimeout (default 20s)")
	f.DurationVar(&o.Hold, "hold", 0, "how long the flood is held (default the longer timeout + 10s)")
	f.DurationVar(&o.PingEvery, "ping-every", 0, "flood connections ping this often (default 10s)")
	f.IntVar(&o.Concurrency, "concurrency", 64, "connections dialled at once")
	f.StringVar(&o.SourceIPs, "source-ips", "127.0.0.1-127.0.0.254", "local addresses flood connections dial from")
	return cmd
}
