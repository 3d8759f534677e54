package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/qtfs/qtfs/bench"
	"github.com/qtfs/qtfs/pkg/logging"
)

func main() { os.Exit(run()) }

func run() int {
	quick := os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0"
	fs := flag.NewFlagSet("qtfsbench", flag.ContinueOnError)
	fs.BoolVar(&quick, "quick", quick, "the one-minute check: small sizes, one run (also BENCH_QUICK=1)")
	repo := fs.String("repo", ".", "the qtfs checkout (binaries in bin/, results in bench/results/)")
	runs := fs.Int("runs", 0, "rounds (default: 3, or 1 in quick mode; also BENCH_RUNS)")
	work := fs.String("work-dir", "", "work directory on a real disk (default /var/tmp/qtfs-bench; also BENCH_WORK_DIR)")
	results := fs.String("results", "", "where to write the report (default REPO/bench/results)")
	peers := fs.String("peers", "", "comma-separated subset of "+strings.Join(bench.AllPeers, ",")+" (also BENCH_PEERS)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	historyOnly := fs.Bool("history", false, "only rewrite the results directory's README.md, the table of the runs kept there, and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log, err := logging.New(*level, "console")
	if err != nil {
		fmt.Fprintln(os.Stderr, "qtfsbench:", err)
		return 2
	}
	cfg := bench.DefaultConfig(quick, *repo)
	if *runs == 0 {
		fmt.Sscanf(os.Getenv("BENCH_RUNS"), "%d", runs)
	}
	if *runs > 0 {
		cfg.Runs = *runs
	}
	if *work == "" {
		*work = os.Getenv("BENCH_WORK_DIR")
	}
	if *work != "" {
		cfg.WorkDir = *work
	}
	if *results != "" {
		cfg.ResultsDir = *results
	}
	if *historyOnly {
		return writeHistory(cfg.ResultsDir)
	}
	if *peers == "" {
		*peers = os.Getenv("BENCH_PEERS")
	}
	if *peers != "" {
		cfg.Peers = strings.Split(*peers, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg, log)
	if res == nil {
		fmt.Fprintln(os.Stderr, "qtfsbench:", err)
		return 1
	}
	fmt.Println(bench.Markdown(res))
	if err != nil {
		fmt.Fprintln(os.Stderr, "qtfsbench: interrupted: the report above is partial and was not saved:", err)
		return 1
	}
	md, js, werr := bench.WriteResults(res, cfg.ResultsDir)
	if werr != nil {
		fmt.Fprintln(os.Stderr, "qtfsbench:", werr)
		return 1
	}
	fmt.Fprintf(os.Stderr, "qtfsbench: report %s, raw results %s\n", md, js)
	return writeHistory(cfg.ResultsDir)
}

// writeHistory rewrites the history of the runs in dir; it returns the
// exit status.
func writeHistory(dir string) int {
	path, err := bench.WriteHistory(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "qtfsbench:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "qtfsbench: history", path)
	return 0
}
