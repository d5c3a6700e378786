package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ocfcloud/ocfcloud/internal/platform"
)

// infraCmd runs the embedded infrastructure on its own, so a topology of
// separate processes (tests, a laptop cluster) needs no other binaries.
func infraCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "infra",
		Short: "Run the embedded NATS server or FerretDB as a process of its own (tests, laptop clusters)",
	}
	cmd.AddCommand(infraNATSCmd(), infraDBCmd())
	return cmd
}

func infraNATSCmd() *cobra.Command {
	var listen, cluster, routes, name, clusterName string
	var o platform.NATSOptions
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "A nats-server with JetStream, optionally one node of a cluster",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Host, o.Port, err = splitHostPort(listen); err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			if cluster != "" {
				if o.ClusterHost, o.ClusterPort, err = splitHostPort(cluster); err != nil {
					return fmt.Errorf("--cluster: %w", err)
				}
				o.ClusterName = clusterName
				if routes != "" {
					o.Routes = strings.Split(routes, ",")
				}
			}
			o.Name = name
			n, err := platform.StartNATS(o)
			if err != nil {
				return err
			}
			defer n.Shutdown()
			fmt.Fprintf(cmd.OutOrStdout(), "nats %s ready on %s\n", name, n.URL())
			<-cmd.Context().Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:4222", "client address")
	f.StringVar(&o.StoreDir, "store-dir", "data/nats", "JetStream store")
	f.StringVar(&name, "name", "ocfcloud-nats", "server name, unique in the cluster")
	f.StringVar(&cluster, "cluster", "", "route address of this node (host:port); empty runs a single server")
	f.StringVar(&clusterName, "cluster-name", "ocfcloud", "cluster name")
	f.StringVar(&routes, "routes", "", "comma-separated nats://host:port routes of the other nodes")
	return cmd
}

func infraDBCmd() *cobra.Command {
	var listen, dir string
	cmd := &cobra.Command{
		Use:   "db",
		Short: "FerretDB on SQLite, speaking the MongoDB wire protocol",
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := platform.StartFerretOn(listen, dir, nil)
			if err != nil {
				return err
			}
			defer f.Shutdown()
			fmt.Fprintf(cmd.OutOrStdout(), "database ready on %s\n", f.URI())
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:27017", "MongoDB wire protocol address")
	cmd.Flags().StringVar(&dir, "dir", "data/db", "directory of the SQLite files")
	return cmd
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return h, port, err
}
