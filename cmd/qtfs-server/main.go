// Command qtfs-server exports host directories to qtfs clients (DPUs).
package main

import (
	"context"
	"strings"
	"time"

	"errors"
	"flag"
	"fmt"
	"github.com/qtfs/qtfs/pkg/transport"
	"os"
	"os/signal"
	"syscall"

	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/server"
	"github.com/qtfs/qtfs/pkg/version"
)

const usage = `qtfs-server exports host directories to qtfs clients over vsock, TCP (mutual TLS) or a unix socket.

Usage:
  qtfs-server [--config /etc/qtfs/server.yaml] --listen URI... --export PATH[:ro]...
              [--tls-cert F --tls-key F --tls-client-ca F | --insecure]
              [--exec-allow BINARY]... [--socket-allow PATH]... [--mount-allow overlay|tmpfs|bind]...
              [--metrics-listen ADDR] [--log-level L]

  qtfs-server gen-certs --out DIR [--server-name NAME,...] [--client-name NAME,...]

Every flag is also a config key (--tls-cert is tls_cert:) and an environment variable
(QTFS_TLS_CERT); flags win over the environment, the environment over the file.

Examples:
  qtfs-server --listen unix:///run/qtfs.sock --export /srv/data
  qtfs-server --listen tcp://0.0.0.0:12121 --tls-cert server.pem --tls-key server-key.pem \
              --tls-client-ca ca.pem --export / --export /proc --export /sys

Flags:
`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) > 0 && args[0] == "gen-certs" {
		return genCerts(args[1:])
	}
	var s server.Settings
	set := flag.NewFlagSet("qtfs-server", flag.ContinueOnError)
	s.Flags(set)
	showVersion := set.Bool("version", false, "print the version and exit")
	set.Usage = func() { fmt.Fprint(set.Output(), usage); set.PrintDefaults() }
	src := config.Source{ConfigFlag: "config", DefaultPath: server.DefaultConfigPath}
	if _, rest, err := src.Load(set, args, &s); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "qtfs-server: %v\n", err)
		return 2
	} else if len(rest) > 0 {
		fmt.Fprintf(os.Stderr, "qtfs-server: unexpected argument %q (see --help)\n", rest[0])
		return 2
	}
	if *showVersion {
		fmt.Println("qtfs-server", version.Version)
		return 0
	}
	keepSysmonAwake()
	log, err := logging.New(s.LogLevel, s.LogFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "qtfs-server: %v\n", err)
		return 2
	}
	defer log.Sync()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := server.Run(ctx, s, log); err != nil {
		fmt.Fprintf(os.Stderr, "qtfs-server: %v\n", err)
		return 1
	}
	return 0
}

const genCertsHelp = `Usage: qtfs-server gen-certs --out DIR [--server-name NAME,...] [--client-name NAME,...]

Creates a new CA and, signed by it, a server certificate and client certificates for a
first install of mutual TLS: ca.pem, server.pem, server-key.pem, client.pem, client-key.pem
(client-NAME.pem for every further client name). Keep ca-key.pem off the DPUs. Existing
files are never overwritten. Server names that are IP addresses become IP SANs.

Flags:
`

func genCerts(args []string) int {
	set := flag.NewFlagSet("qtfs-server gen-certs", flag.ContinueOnError)
	out := set.String("out", "", "directory to write to (created 0700)")
	serverNames := set.String("server-name", "localhost,127.0.0.1,::1", "the server's host names and addresses, comma-separated")
	clientNames := set.String("client-name", "qtfs-client", "client common names, comma-separated")
	days := set.Int("valid-days", 365, "lifetime of the server and client certificates in days")
	set.Usage = func() { fmt.Fprint(set.Output(), genCertsHelp); set.PrintDefaults() }
	if err := set.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || set.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "qtfs-server gen-certs: give --out DIR (see --help)")
		return 2
	}
	files, err := transport.WritePKI(*out, transport.PKIOptions{
		ServerNames: splitList(*serverNames),
		ClientNames: splitList(*clientNames),
		Validity:    time.Duration(*days) * 24 * time.Hour,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "qtfs-server gen-certs: %v\n", err)
		return 1
	}
	fmt.Printf("CA:     %s (key %s: keep it on the host)\nserver: %s %s\nclient: %s %s\n",
		files.CA, files.CAKey, files.ServerCert, files.ServerKey, files.ClientCert, files.ClientKey)
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
