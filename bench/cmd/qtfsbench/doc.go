// Command qtfsbench runs the qtfs benchmark: the same workloads on the
// local directory, go-fuse's loopback, sshfs and qtfs (TCP+TLS and unix
// socket), interleaved over several rounds, and writes a markdown report
// with the machine description to bench/results/. `make bench` installs
// what it needs, builds the binaries and runs it; BENCH_QUICK=1 (or -quick)
// is the one-minute check. See bench/README.md.
//
// Invariants: it needs root; it stops what it started, by pid, and
// unmounts what it mounted, also on SIGINT and SIGTERM. Lock order: none.
package main
