package bench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config is what one run measures and where.
type Config struct {
	Quick bool // the one-minute check: small sizes, one round
	Runs  int  // rounds; every peer runs every workload once per round

	SeqSize     int64 // bytes of the sequential write/read file (the random reads use it too)
	RandQD1IO   int64 // bytes read by the 4 KiB random read at queue depth 1
	RandJobIO   int64 // bytes read by each of the 4 jobs of the 4-job random read
	RandJobs    int   // jobs of the parallel random read
	MetaFiles   int   // small files created, stat'ed, listed and unlinked
	MetaSize    int   // bytes written to each of them
	TreeEntries int   // entries (directories and files) of the find+stat tree
	CopySource  string
	ProcScans   int           // /proc scans per measurement
	IdleWindow  time.Duration // how long the idle CPU of the daemons is watched

	WorkDir    string // backing data, mount points, keys, logs; on a real disk, not tmpfs
	ResultsDir string // where the markdown and JSON results go
	RepoDir    string // the qtfs checkout (for the commit in the machine description)

	// Binaries: qtfs, go-fuse's loopback example, and the same loopback
	// without FUSE passthrough (bench/cmd/loopback-nopt).
	QtfsServer, QtfsClient, Loopback, LoopbackNoPT string

	Peers []string // which peers, in run order
}

// DefaultConfig is the full measurement (quick=false) or the one-minute
// check (quick=true), with paths relative to the checkout at repo.
func DefaultConfig(quick bool, repo string) Config {
	c := Config{
		Quick:        false,
		Runs:         5,
		SeqSize:      1 << 30,
		RandQD1IO:    32 << 20,
		RandJobIO:    16 << 20,
		RandJobs:     4,
		MetaFiles:    10000,
		MetaSize:     512,
		TreeEntries:  50000,
		CopySource:   filepath.Join(goroot(), "src", "cmd", "go"),
		ProcScans:    10,
		IdleWindow:   20 * time.Second,
		WorkDir:      "/var/tmp/qtfs-bench",
		ResultsDir:   filepath.Join(repo, "bench", "results"),
		RepoDir:      repo,
		QtfsServer:   filepath.Join(repo, "bin", "qtfs-server"),
		QtfsClient:   filepath.Join(repo, "bin", "qtfs-client"),
		Loopback:     filepath.Join(repo, "bin", "bench", "gofuse-loopback"),
		LoopbackNoPT: filepath.Join(repo, "bin", "bench", "gofuse-loopback-nopt"),
		Peers:        slices.Clone(AllPeers),
	}
	if quick {
		c.Quick = true
		c.Runs = 1
		c.SeqSize = 64 << 20
		c.RandQD1IO = 8 << 20
		c.RandJobIO = 4 << 20
		c.MetaFiles = 1000
		c.TreeEntries = 5000
		c.CopySource = filepath.Join(goroot(), "src", "net")
		c.ProcScans = 5
		c.IdleWindow = 5 * time.Second
	}
	return c
}

// Validate checks the settings that would make a run meaningless.
func (c Config) Validate() error {
	switch {
	case c.Runs < 1:
		return fmt.Errorf("bench: runs %d: want at least 1", c.Runs)
	case c.SeqSize < 4<<20 || c.SeqSize%(1<<20) != 0:
		return fmt.Errorf("bench: sequential size %d: want a multiple of 1 MiB, at least 4 MiB", c.SeqSize)
	case c.RandJobs < 1 || c.SeqSize/int64(c.RandJobs) < c.RandJobIO || c.RandQD1IO > c.SeqSize:
		return fmt.Errorf("bench: random read sizes exceed the %d-byte file", c.SeqSize)
	case c.MetaFiles < 1 || c.TreeEntries < 300 || c.ProcScans < 1:
		return fmt.Errorf("bench: file counts too small (meta %d, tree %d, proc scans %d)", c.MetaFiles, c.TreeEntries, c.ProcScans)
	case !filepath.IsAbs(c.WorkDir) || filepath.Clean(c.WorkDir) == "/":
		return fmt.Errorf("bench: work dir %q: want an absolute path below /", c.WorkDir)
	case len(c.Peers) == 0:
		return fmt.Errorf("bench: no peers")
	}
	for _, p := range c.Peers {
		if !slices.Contains(AllPeers, p) {
			return fmt.Errorf("bench: unknown peer %q", p)
		}
	}
	return nil
}

// goroot is the Go installation whose source tree serves as the cp -a
// source: a real tree of many small files that every Go machine has.
func goroot() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "/usr/local/go"
	}
	return strings.TrimSpace(string(out))
}
