package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qtfs/qtfs/pkg/fifo"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/hostexec"
	"github.com/qtfs/qtfs/pkg/sdnotify"
	"github.com/qtfs/qtfs/pkg/sockproxy"
	"github.com/qtfs/qtfs/pkg/transport"
	"github.com/qtfs/qtfs/pkg/transport/transportmetrics"
	"github.com/qtfs/qtfs/pkg/version"
)

// ShutdownGrace is how long in-flight calls may run after SIGTERM.
const ShutdownGrace = 5 * time.Second

// Run serves until ctx ends or a listener fails.
func Run(ctx context.Context, s Settings, log *zap.Logger) error {
	v, err := s.validate()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	handshakes, err := transportmetrics.NewHandshakes(reg)
	if err != nil {
		return err
	}
	creds, err := transport.ServerCredentials(v.security, transport.WithLogger(log.Named("transport")), transport.WithHandshakeCounter(handshakes))
	if err != nil {
		return err
	}
	// Listen before the export roots are made: a server that cannot
	// start makes nothing on the host.
	var raw []net.Listener
	defer func() {
		for _, l := range raw {
			l.Close()
		}
	}()
	for _, u := range v.listen {
		l, err := transport.Listen(ctx, u, v.security)
		if err != nil {
			return err
		}
		raw = append(raw, l)
	}
	if err := makeExportRoots(v.exports, log.Named("fs")); err != nil {
		return err
	}

	fsrv, err := hostfs.New(hostfs.Options{
		Exports:    v.exports,
		Logger:     log.Named("fs"),
		Registerer: reg,
		ServerName: "qtfs-server " + version.Version,
		Limits:     v.limits,
		MountAllow: v.mountAllow,
		// Every listener below hands its call channels to fsrv.
		CallChannels: true,
	})
	if err != nil {
		return err
	}
	defer fsrv.Close()

	opts := append([]grpc.ServerOption{grpc.Creds(creds)}, transport.ServerOptions()...)
	opts = append(opts, fsrv.ServerOptions()...)
	g := grpc.NewServer(opts...)
	fsrv.Register(g)
	if len(s.ExecAllow) > 0 {
		ex, err := hostexec.New(hostexec.Options{
			Allow:      s.ExecAllow,
			EnvDeny:    v.execEnvDeny,
			Logger:     log.Named("exec"),
			Registerer: reg,
		})
		if err != nil {
			return err
		}
		ex.Register(g)
	}
	if len(s.SocketAllow) > 0 {
		sp, err := sockproxy.NewServer(sockproxy.ServerOptions{
			Allow:      s.SocketAllow,
			Logger:     log.Named("sockproxy"),
			Registerer: reg,
		})
		if err != nil {
			return err
		}
		sp.Register(g)
	}
	fexports := make([]fifo.Export, 0, len(v.exports))
	for _, e := range v.exports {
		// A FIFO is opened, and made, as Open and Mknod would be.
		if e.Allows("Open") {
			fexports = append(fexports, fifo.Export{Path: e.Path, ReadOnly: e.ReadOnly || !e.Allows("Mknod") || !e.Allows("Mkdir")})
		}
	}
	ff, err := fifo.NewServer(fifo.ServerOptions{Exports: fexports, Logger: log.Named("fifo"), Registerer: reg})
	if err != nil {
		return err
	}
	ff.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)

	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, l := range raw {
		split, err := transport.SplitChannels(l, creds, fsrv.ServeChannel)
		if err != nil {
			return err
		}
		listeners = append(listeners, split)
	}

	errc := make(chan error, len(listeners)+1)
	var wg sync.WaitGroup
	for i, l := range listeners {
		wg.Add(1)
		go func(u transport.URI, l net.Listener) {
			defer wg.Done()
			if err := g.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("serve %s: %w", u, err)
			}
		}(v.listen[i], l)
	}

	var metricsSrv *http.Server
	if s.MetricsListen != "" {
		ml, err := net.Listen("tcp", s.MetricsListen)
		if err != nil {
			g.Stop()
			return fmt.Errorf("metrics listen %s: %w", s.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		if isLoopback(ml.Addr()) {
			// Profiles only where no one but this host can ask for them.
			addPprof(mux)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		log.Info("metrics", zap.String("listen", ml.Addr().String()))
	}

	var where []string
	for _, u := range v.listen {
		where = append(where, u.String())
	}
	var exports []string
	for _, e := range v.exports {
		exports = append(exports, e.Path+map[bool]string{true: ":ro", false: ""}[e.ReadOnly])
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("qtfs-server ready",
		zap.String("version", version.Version),
		zap.Strings("listen", where),
		zap.Strings("exports", exports),
		zap.Strings("exec_allow", s.ExecAllow),
		zap.Strings("socket_allow", s.SocketAllow),
		zap.Strings("mount_allow", v.mountAllow))
	_ = sdnotify.Ready(fmt.Sprintf("serving %d exports on %s", len(exports), strings.Join(where, " ")))

	select {
	case <-ctx.Done():
		log.Info("shutting down", zap.Duration("grace", ShutdownGrace))
	case err = <-errc:
		log.Error("listener failed, shutting down", zap.Error(err))
	}
	_ = sdnotify.Stopping()
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(ShutdownGrace):
		g.Stop()
	}
	wg.Wait()
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = metricsSrv.Shutdown(sctx)
	}
	return err
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// addPprof serves the Go runtime's profiles under /debug/pprof/.
func addPprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
