package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// measure is what one run of a workload on one peer found.
type measure struct {
	value float64            // in the workload's unit
	extra map[string]float64 // secondary figures (p99 latency, IOPS…)
}

// Workload classes, for the targets of the report.
const (
	classSeq   = "sequential"
	classRand  = "random"
	classMeta  = "metadata"
	classTree  = "tree"
	classProc  = "proc"
	classOther = "other"
)

// workload is one measurement. prepare and after are not timed and not in the
// CPU deltas; run times itself (so checks of its output stay out of the
// figure) and returns the figure.
type workload struct {
	id, title, unit string
	higher          bool   // a higher figure is better
	class           string // classSeq…
	proc            bool   // runs on the peer's /proc view, with its /proc mount's processes
	prepare         func(ctx context.Context, s *step) error
	run             func(ctx context.Context, s *step) (measure, error)
	after           func(ctx context.Context, s *step) error
}

// step is one workload on one peer in one round.
type step struct {
	e     *env
	p     *peer
	round int
}

// names of the per-round files and directories, the same for every peer.
func (s *step) seqName() string  { return fmt.Sprintf("seq-r%d.dat", s.round) }
func (s *step) metaName() string { return fmt.Sprintf("meta-r%d", s.round) }
func (s *step) copyName() string { return fmt.Sprintf("src-copy-r%d", s.round) }

// via is name as the peer shows it; local is the same in the backing dir.
func (s *step) via(name string) string   { return filepath.Join(s.p.data, name) }
func (s *step) local(name string) string { return filepath.Join(s.e.data, name) }

const (
	treeDir = "tree" // the find+stat tree, built once in the backing dir
	srcDir  = "src"  // the cp -a source, copied once into the backing dir
)

// workloads is the list every peer runs, in order, for cfg.
func workloads(cfg Config) []workload {
	mib := float64(1 << 20)
	seqArgs := func(s *step, rw string) []string {
		return []string{"--name=" + rw, "--filename=" + s.via(s.seqName()), "--rw=" + rw, "--bs=1M",
			"--size=" + strconv.FormatInt(cfg.SeqSize, 10), "--ioengine=psync", "--fallocate=none"}
	}
	randArgs := func(s *step, name string) []string {
		invalidate := "0"
		if s.p.fuse {
			invalidate = "1"
		}
		return []string{"--name=" + name, "--filename=" + s.via(s.seqName()), "--rw=randread", "--bs=4k",
			"--ioengine=psync", "--invalidate=" + invalidate, "--randrepeat=1"}
	}
	warm := func(_ context.Context, s *step) error { return readAll(s.local(s.seqName())) }
	dropFirst := func(_ context.Context, s *step) error { s.e.dropCaches(); return nil }
	n := cfg.MetaFiles
	return []workload{
		{
			id: "seq-write", title: fmt.Sprintf("sequential write %s, 1 MiB blocks, fsync at end", sizeName(cfg.SeqSize)),
			unit: "MiB/s", higher: true, class: classSeq,
			prepare: func(_ context.Context, s *step) error {
				if err := os.Remove(s.via(s.seqName())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("bench: remove old file: %w", err)
				}
				s.e.dropCaches()
				return nil
			},
			run: func(ctx context.Context, s *step) (measure, error) {
				r, err := runFio(ctx, s.e.tmpDir, true, append(seqArgs(s, "write"), "--end_fsync=1")...)
				return measure{value: r.BWBytes / mib}, err
			},
		},
		{
			id: "seq-read", title: fmt.Sprintf("sequential read %s, 1 MiB blocks, caches dropped", sizeName(cfg.SeqSize)),
			unit: "MiB/s", higher: true, class: classSeq, prepare: dropFirst,
			run: func(ctx context.Context, s *step) (measure, error) {
				r, err := runFio(ctx, s.e.tmpDir, false, seqArgs(s, "read")...)
				return measure{value: r.BWBytes / mib}, err
			},
		},
		{
			id: "rand-read-qd1", title: fmt.Sprintf("4 KiB random read, queue depth 1, %s of the file: mean latency", sizeName(cfg.RandQD1IO)),
			unit: "µs", higher: false, class: classRand, prepare: warm,
			run: func(ctx context.Context, s *step) (measure, error) {
				r, err := runFio(ctx, s.e.tmpDir, false, append(randArgs(s, "randread-qd1"),
					"--size="+strconv.FormatInt(cfg.SeqSize, 10), "--io_size="+strconv.FormatInt(cfg.RandQD1IO, 10))...)
				return measure{value: r.LatMeanNs / 1e3, extra: map[string]float64{"p99_us": r.LatP99Ns / 1e3, "iops": r.IOPS}}, err
			},
		},
		{
			id: "rand-read-jobs", title: fmt.Sprintf("4 KiB random read, %d jobs, %s each: throughput", cfg.RandJobs, sizeName(cfg.RandJobIO)),
			unit: "IOPS", higher: true, class: classRand, prepare: warm,
			run: func(ctx context.Context, s *step) (measure, error) {
				part := strconv.FormatInt(cfg.SeqSize/int64(cfg.RandJobs), 10)
				r, err := runFio(ctx, s.e.tmpDir, false, append(randArgs(s, "randread-jobs"),
					"--numjobs="+strconv.Itoa(cfg.RandJobs), "--size="+part, "--offset_increment="+part,
					"--io_size="+strconv.FormatInt(cfg.RandJobIO, 10), "--group_reporting")...)
				return measure{value: r.IOPS, extra: map[string]float64{"lat_us": r.LatMeanNs / 1e3}}, err
			},
			after: func(_ context.Context, s *step) error { return os.Remove(s.local(s.seqName())) },
		},
		{
			id: "create", title: fmt.Sprintf("create %s files of %d bytes in one directory", count(n), cfg.MetaSize),
			unit: "files/s", higher: true, class: classMeta,
			prepare: func(_ context.Context, s *step) error {
				if err := os.RemoveAll(s.local(s.metaName())); err != nil {
					return fmt.Errorf("bench: clear meta dir: %w", err)
				}
				return os.Mkdir(s.via(s.metaName()), 0o755)
			},
			run: func(ctx context.Context, s *step) (measure, error) {
				return rate(n, func() error { return createFiles(ctx, s.via(s.metaName()), n, cfg.MetaSize) })
			},
		},
		{
			id: "stat", title: fmt.Sprintf("stat the %s files, caches dropped", count(n)),
			unit: "files/s", higher: true, class: classMeta, prepare: dropFirst,
			run: func(ctx context.Context, s *step) (measure, error) {
				return rate(n, func() error { return statFiles(ctx, s.via(s.metaName()), n, cfg.MetaSize) })
			},
		},
		{
			id: "readdir", title: fmt.Sprintf("list the directory of %s files, caches dropped", count(n)),
			unit: "entries/s", higher: true, class: classMeta, prepare: dropFirst,
			run: func(_ context.Context, s *step) (measure, error) {
				return rate(n, func() error { return listDir(s.via(s.metaName()), n) })
			},
		},
		{
			id: "unlink", title: fmt.Sprintf("unlink the %s files, caches dropped", count(n)),
			unit: "files/s", higher: true, class: classMeta, prepare: dropFirst,
			run: func(ctx context.Context, s *step) (measure, error) {
				return rate(n, func() error { return unlinkFiles(ctx, s.via(s.metaName()), n) })
			},
			after: func(_ context.Context, s *step) error { return os.RemoveAll(s.local(s.metaName())) },
		},
		{
			id: "find-stat", title: fmt.Sprintf("find + stat over a %s-entry tree, caches dropped", count(cfg.TreeEntries)),
			unit: "s", higher: false, class: classTree, prepare: dropFirst,
			run: func(ctx context.Context, s *step) (measure, error) {
				t0 := time.Now()
				lines, err := findStat(ctx, s.via(treeDir))
				d := time.Since(t0).Seconds()
				if err == nil && lines != cfg.TreeEntries+1 {
					err = fmt.Errorf("bench: find listed %d entries, want %d", lines, cfg.TreeEntries+1)
				}
				return measure{value: d, extra: map[string]float64{"entries_per_s": float64(lines) / d}}, err
			},
		},
		{
			id: "cp-a", title: "cp -a of a source tree of many small files, caches dropped",
			unit: "s", higher: false, class: classOther,
			prepare: func(_ context.Context, s *step) error {
				if err := os.RemoveAll(s.local(s.copyName())); err != nil {
					return fmt.Errorf("bench: clear copy: %w", err)
				}
				s.e.dropCaches()
				return nil
			},
			run: func(ctx context.Context, s *step) (measure, error) {
				t0 := time.Now()
				out, err := exec.CommandContext(ctx, "cp", "-a", s.via(srcDir), s.via(s.copyName())).CombinedOutput()
				d := time.Since(t0).Seconds()
				if err != nil {
					return measure{}, fmt.Errorf("bench: cp -a: %w: %.300s", err, out)
				}
				want, err := countTree(s.local(srcDir))
				if err != nil {
					return measure{}, err
				}
				got, err := countTree(s.local(s.copyName()))
				if err == nil && got != want {
					err = fmt.Errorf("bench: cp -a copied %d entries, want %d", got, want)
				}
				return measure{value: d, extra: map[string]float64{"entries_per_s": float64(want) / d}}, err
			},
			after: func(_ context.Context, s *step) error { return os.RemoveAll(s.local(s.copyName())) },
		},
		{
			id: "proc-scan", title: "ps-like /proc scan: every pid's stat and status",
			unit: "ms/scan", higher: false, class: classProc, proc: true,
			run: func(ctx context.Context, s *step) (measure, error) {
				var pids int
				t0 := time.Now()
				for range cfg.ProcScans {
					if err := ctx.Err(); err != nil {
						return measure{}, err
					}
					r, err := procScan(s.p.proc)
					if err != nil {
						return measure{}, err
					}
					pids = r.pids
				}
				d := time.Since(t0)
				return measure{value: float64(d.Microseconds()) / 1e3 / float64(cfg.ProcScans), extra: map[string]float64{"pids": float64(pids)}}, nil
			},
		},
	}
}

// rate times f and returns n/duration.
func rate(n int, f func() error) (measure, error) {
	t0 := time.Now()
	err := f()
	d := time.Since(t0).Seconds()
	if err != nil {
		return measure{}, err
	}
	return measure{value: float64(n) / d}, nil
}

func metaName(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("f%06d", i)) }

// createFiles creates n files of size bytes in dir (open O_CREAT|O_EXCL,
// write, close).
func createFiles(ctx context.Context, dir string, n, size int) error {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for i := range n {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		f, err := os.OpenFile(metaName(dir, i), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("bench: create: %w", err)
		}
		_, werr := f.Write(buf)
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			return fmt.Errorf("bench: create: %w", err)
		}
	}
	return nil
}

// statFiles lstat's the n files of dir and checks their size.
func statFiles(ctx context.Context, dir string, n, size int) error {
	for i := range n {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		fi, err := os.Lstat(metaName(dir, i))
		if err != nil {
			return fmt.Errorf("bench: stat: %w", err)
		}
		if fi.Size() != int64(size) {
			return fmt.Errorf("bench: stat %s: size %d, want %d", fi.Name(), fi.Size(), size)
		}
	}
	return nil
}

// listDir reads dir's entries (getdents, no stat) and checks there are n.
func listDir(dir string, n int) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bench: readdir: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("bench: readdir: %w", err)
	}
	if len(names) != n {
		return fmt.Errorf("bench: readdir %s: %d entries, want %d", dir, len(names), n)
	}
	return nil
}

// unlinkFiles removes the n files of dir, then dir.
func unlinkFiles(ctx context.Context, dir string, n int) error {
	for i := range n {
		if i%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := os.Remove(metaName(dir, i)); err != nil {
			return fmt.Errorf("bench: unlink: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("bench: rmdir: %w", err)
	}
	return nil
}

// findStat runs find over dir, printing fields that need a stat of every
// entry, and counts the entries.
func findStat(ctx context.Context, dir string) (int, error) {
	cmd := exec.CommandContext(ctx, "find", dir, "-printf", "%y %s %m %U %G %T@ %p\n")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, fmt.Errorf("bench: find: %w", err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("bench: find: %w", err)
	}
	lines := 0
	br := bufio.NewReaderSize(out, 256*1024)
	for {
		_, err := br.ReadSlice('\n')
		if err == nil {
			lines++
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		break
	}
	if err := cmd.Wait(); err != nil {
		return lines, fmt.Errorf("bench: find: %w: %.300s", err, stderr.String())
	}
	return lines, nil
}

// countTree counts the entries below dir (dir itself excluded).
func countTree(dir string) (int, error) {
	n := -1
	err := filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bench: count %s: %w", dir, err)
	}
	return n, nil
}

// procScanResult counts what one /proc scan read.
type procScanResult struct {
	pids, files, bytes int
}

// procScan does what ps does with each pid of a /proc view: read its stat
// and status. A process that ended during the scan is skipped. Reading
// nothing at all is an error: the view does not show /proc's content.
func procScan(dir string) (procScanResult, error) {
	var r procScanResult
	f, err := os.Open(dir)
	if err != nil {
		return r, fmt.Errorf("bench: proc scan: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return r, fmt.Errorf("bench: proc scan: %w", err)
	}
	buf := make([]byte, 64*1024)
	for _, name := range names {
		if _, err := strconv.Atoi(name); err != nil {
			continue
		}
		r.pids++
		for _, file := range []string{"stat", "status"} {
			n, err := readSmall(filepath.Join(dir, name, file), buf)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
				continue
			}
			if err != nil {
				return r, fmt.Errorf("bench: proc scan: %w", err)
			}
			r.files++
			r.bytes += n
		}
	}
	if r.pids == 0 {
		return r, fmt.Errorf("bench: proc scan of %s: no pids", dir)
	}
	if r.bytes == 0 {
		return r, fmt.Errorf("bench: proc scan of %s: read 0 bytes from all %d files (the mount shows /proc's size-0 files as empty)", dir, r.files)
	}
	return r, nil
}

// readSmall reads a whole small file into buf (as ps does: one open, reads
// until EOF, close) and returns its length.
func readSmall(path string, buf []byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total := 0
	for {
		n, err := f.Read(buf[total:])
		total += n
		switch {
		case err == io.EOF:
			return total, nil
		case err != nil:
			return total, err
		case n == 0 || total == len(buf):
			return total, nil
		}
	}
}

// readAll reads path to the end (to warm the page cache).
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bench: warm: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyBuffer(io.Discard, f, make([]byte, 1<<20)); err != nil {
		return fmt.Errorf("bench: warm: %w", err)
	}
	return nil
}

// buildTree makes a tree of exactly entries entries below dir: 20
// directories of 10 directories each, the files spread over the 200 leaves.
func buildTree(dir string, entries int) error {
	const top, sub = 20, 10
	files := entries - top - top*sub
	if files < 0 {
		return fmt.Errorf("bench: tree of %d entries: want at least %d", entries, top+top*sub)
	}
	var leaves []string
	for i := range top {
		for j := range sub {
			d := filepath.Join(dir, fmt.Sprintf("d%02d", i), fmt.Sprintf("e%02d", j))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("bench: tree: %w", err)
			}
			leaves = append(leaves, d)
		}
	}
	for k := range files {
		p := filepath.Join(leaves[k%len(leaves)], fmt.Sprintf("f%05d", k))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return fmt.Errorf("bench: tree: %w", err)
		}
	}
	return nil
}

func sizeName(b int64) string {
	if b >= 1<<30 && b%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", b>>30)
	}
	return fmt.Sprintf("%d MiB", b>>20)
}

// count writes n with thousands separators (10,000).
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
