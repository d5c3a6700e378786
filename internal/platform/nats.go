package platform

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSOptions configure the embedded nats-server.
type NATSOptions struct {
	// StoreDir holds JetStream's file store.
	StoreDir string
	// Host and Port to listen on; Port -1 picks a random port.
	Host string
	Port int
	// Name is the server's name, unique in a cluster; default
	// "ocfcloud-embedded".
	Name string
	// Cluster settings join a JetStream cluster: this server listens for
	// routes on ClusterHost:ClusterPort and dials Routes
	// (nats://host:port). Empty ClusterName runs a single server.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string
	// Logger receives the server's warnings and errors (a JetStream write
	// error on a full disk, for example); its notices go to Debug. Nil: the
	// server logs nothing.
	Logger *slog.Logger
	// MinFreeDisk is the free space the store dir needs before a single
	// server restarts JetStream after a write error; default
	// DefaultMinFreeDisk.
	MinFreeDisk uint64
}

// NATS is an embedded nats-server with JetStream.
//
// A JetStream stream that fails to write (a full disk) refuses every
// publish from then on, also after space is freed; on a full disk the
// server may turn JetStream off altogether. A single server therefore
// watches for both and, once the store dir has MinFreeDisk free again,
// restarts JetStream, which reloads the streams from disk and takes
// messages again. In a cluster a stream with a write error hands its
// leadership to a healthy replica, and the node only reports the fault
// (StoreWritable); restarting it is the operator's call.
type NATS struct {
	srv       *server.Server
	storeDir  string
	minFree   uint64
	clustered bool
	log       *slog.Logger
	// writeFailed: a stream reported a write error since JetStream last
	// (re)started.
	writeFailed atomic.Bool
	stop, done  chan struct{}
	stopOnce    sync.Once
}

// storeCheckEvery is how often a server with a failed store checks whether
// it can restart JetStream.
const storeCheckEvery = 2 * time.Second

// StartNATS starts an embedded nats-server and waits until it accepts clients.
func StartNATS(o NATSOptions) (*NATS, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	if o.Name == "" {
		o.Name = "ocfcloud-embedded"
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoLog:      true,
		NoSigs:     true,
		// Room for event payloads with large resource representations.
		MaxPayload: 8 << 20,
	}
	if o.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: o.ClusterHost, Port: o.ClusterPort}
		if len(o.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(o.Routes, ","))
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n := &NATS{srv: srv, storeDir: o.StoreDir, minFree: o.MinFreeDisk, clustered: o.ClusterName != "",
		log: log.With("component", "nats-server"), stop: make(chan struct{}), done: make(chan struct{})}
	if n.minFree == 0 {
		n.minFree = DefaultMinFreeDisk
	}
	// The logger is also how a stream's write error becomes known: the
	// server keeps it in an unexported field.
	srv.SetLogger(natsLogger{l: n.log, writeFailed: n.writeFailed.Store}, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	if o.ClusterName == "" && !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: JetStream did not start (store dir %q)", o.StoreDir)
	}
	go n.keepStore()
	return n, nil
}

// StoreWritable reports whether JetStream is on and no stream has failed to
// write since it last started.
func (n *NATS) StoreWritable() bool {
	return !n.writeFailed.Load() && (n.clustered || n.srv.JetStreamEnabled())
}

// keepStore restarts JetStream on a single server whose store failed, once
// the store dir has room again.
func (n *NATS) keepStore() {
	defer close(n.done)
	if n.clustered {
		return
	}
	t := time.NewTicker(storeCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.StoreWritable() {
			continue
		}
		if free, ok := freeBytes(n.storeDir); ok && free < n.minFree {
			continue
		}
		n.restartJetStream()
	}
}

// restartJetStream stops JetStream and starts it again on the same store:
// the streams are reloaded from disk without the write error. Clients see
// "JetStream not enabled" for the moment in between and retry.
func (n *NATS) restartJetStream() {
	n.log.Warn("restarting JetStream after a store write error: the store dir has room again", "store_dir", n.storeDir)
	if err := n.srv.ShutdownJetStream(); err != nil {
		n.log.Error("JetStream restart: shutdown", "err", err)
		return
	}
	// Cleared before the start: a write that fails right after it counts.
	n.writeFailed.Store(false)
	if err := n.srv.EnableJetStream(&server.JetStreamConfig{StoreDir: n.storeDir}); err != nil {
		n.log.Error("JetStream restart failed; trying again shortly", "err", err)
		return
	}
	n.log.Info("JetStream restarted; streams take messages again")
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return n.srv.ClientURL() }

// Shutdown stops the server and waits for it.
func (n *NATS) Shutdown() {
	n.stopOnce.Do(func() { close(n.stop) })
	<-n.done
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// natsLogger hands nats-server's log lines to slog, and tells writeFailed
// when a stream reports a write error.
type natsLogger struct {
	l           *slog.Logger
	writeFailed func(bool)
}

// streamWriteError is in the format of the line a stream logs when it
// stops taking messages because a write failed (nats-server 2.10-2.15).
const streamWriteError = "critical write error"

func (n natsLogger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n natsLogger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n natsLogger) Errorf(format string, v ...any) {
	if strings.Contains(format, streamWriteError) {
		n.writeFailed(true)
	}
	n.l.Error(fmt.Sprintf(format, v...))
}
func (n natsLogger) Debugf(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n natsLogger) Tracef(format string, v ...any) {}
