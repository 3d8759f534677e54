// Command faultio is the workload the e2e fault and load tests run on the
// DPU side, through a qtfs mount, while they break things. Each mode runs
// until its stop file exists (or its count is done), keeps going through
// errors, and prints one JSON summary line on stdout at the end:
//
//	faultio seqwrite FILE LOG CHUNK_KIB COUNT STOPFILE
//	    one open fd; chunk i (deterministic bytes) is written at i*chunk,
//	    then fsync; "i sha256" is appended to LOG (a local file) once the
//	    fsync returned. A failed chunk is retried.
//	faultio randread FILE SIZE STOPFILE
//	    one open fd; 4 KiB reads at random offsets of a file whose content
//	    is pattern(offset), each checked.
//	faultio walk DIR DIRS FILES STOPFILE
//	    walks DIR (DIRS directories of FILES files, made by the test) again
//	    and again, with directory fds held open between small readdir
//	    batches, and checks every name and size.
//	faultio load DIR WORKERS SECONDS
//	    WORKERS goroutines each doing mixed metadata and data operations
//	    in their own subdirectory, checking every result.
//	faultio pattern FILE SIZE
//	    writes the randread file.
//	faultio get URL
//	    prints the body of an HTTP GET (metrics of a server in another
//	    network namespace).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// summary is what every mode prints.
type summary struct {
	Mode       string         `json:"mode"`
	Ops        int64          `json:"ops"`
	Errors     int64          `json:"errors"`
	Errnos     map[string]int `json:"errnos,omitempty"`
	Mismatches int64          `json:"mismatches"`
	MaxLatency float64        `json:"max_latency_seconds"`
	Done       int64          `json:"done"`
	FirstError string         `json:"first_error,omitempty"`
	Seconds    float64        `json:"seconds"`
}

type recorder struct {
	mu    sync.Mutex
	s     summary
	start time.Time
}

func newRecorder(mode string) *recorder {
	return &recorder{s: summary{Mode: mode, Errnos: map[string]int{}}, start: time.Now()}
}

// op records one operation that took d and failed with err (nil: fine).
func (r *recorder) op(d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Ops++
	if s := d.Seconds(); s > r.s.MaxLatency {
		r.s.MaxLatency = s
	}
	if err != nil {
		r.s.Errors++
		var e syscall.Errno
		name := "other"
		if errors.As(err, &e) {
			name = e.Error()
		}
		r.s.Errnos[name]++
		if r.s.FirstError == "" {
			r.s.FirstError = err.Error()
		}
		fmt.Fprintf(os.Stderr, "%s: %s error after %v: %v\n", time.Now().Format("15:04:05.000"), r.s.Mode, d, err)
	}
}

func (r *recorder) mismatch(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Mismatches++
	fmt.Fprintf(os.Stderr, "%s: %s mismatch: %s\n", time.Now().Format("15:04:05.000"), r.s.Mode, fmt.Sprintf(format, args...))
}

func (r *recorder) print() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.s.Seconds = time.Since(r.start).Seconds()
	b, _ := json.Marshal(r.s)
	fmt.Println(string(b))
}

func stopped(stop string) bool {
	_, err := os.Stat(stop)
	return err == nil
}

// chunk returns the deterministic content of sequential chunk i.
func chunk(i, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(i), 0x9e3779b97f4a7c15))
	for j := 0; j+8 <= size; j += 8 {
		binary.LittleEndian.PutUint64(b[j:], r.Uint64())
	}
	return b
}

// pattern is the content of the randread file at off.
func pattern(off int64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		o := off + int64(i)
		b[i] = byte(o*131 + o>>8 + o>>16)
	}
	return b
}

func seqwrite(file, logPath string, chunkKiB, count int, stop string) {
	r := newRecorder("seqwrite")
	defer r.print()
	size := chunkKiB << 10
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		r.op(0, err)
		return
	}
	defer f.Close()
	lg, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		r.op(0, err)
		return
	}
	defer lg.Close()
	for i := 0; i < count && !stopped(stop); {
		data := chunk(i, size)
		t0 := time.Now()
		_, err := f.WriteAt(data, int64(i)*int64(size))
		if err == nil {
			err = f.Sync()
		}
		r.op(time.Since(t0), err)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(lg, "%d %s\n", i, hex.EncodeToString(sum[:]))
		lg.Sync()
		r.s.Done++
		i++
	}
}

func randread(file string, size int64, stop string) {
	r := newRecorder("randread")
	defer r.print()
	f, err := os.Open(file)
	if err != nil {
		r.op(0, err)
		return
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	buf := make([]byte, 4096)
	for !stopped(stop) {
		off := rng.Int64N(size-int64(len(buf))) &^ 511
		t0 := time.Now()
		n, err := f.ReadAt(buf, off)
		r.op(time.Since(t0), err)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !bytes.Equal(buf[:n], pattern(off, n)) || n != len(buf) {
			r.mismatch("%d bytes at %d differ from the pattern", n, off)
		}
		r.s.Done++
	}
}

func walk(dir string, dirs, files int, stop string) {
	r := newRecorder("walk")
	defer r.print()
	for !stopped(stop) {
		top, err := os.Open(dir)
		t0 := time.Now()
		if err != nil {
			r.op(time.Since(t0), err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		seen := 0
		for !stopped(stop) {
			t0 := time.Now()
			names, err := top.Readdirnames(16)
			if err == io.EOF {
				break
			}
			r.op(time.Since(t0), err)
			if err != nil {
				break
			}
			for _, n := range names {
				seen++
				sub := filepath.Join(dir, n)
				t0 := time.Now()
				ents, err := os.ReadDir(sub)
				r.op(time.Since(t0), err)
				if err != nil {
					continue
				}
				if len(ents) != files {
					r.mismatch("%s holds %d entries, want %d", sub, len(ents), files)
				}
				for _, e := range ents {
					t0 := time.Now()
					fi, err := e.Info()
					r.op(time.Since(t0), err)
					if err == nil && fi.Size() != int64(len(e.Name())) {
						r.mismatch("%s/%s has size %d", sub, e.Name(), fi.Size())
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		top.Close()
		if seen != dirs && !stopped(stop) {
			r.mismatch("walk saw %d directories, want %d", seen, dirs)
		}
		r.s.Done++
	}
}

// load runs workers doing a mix of metadata and data operations, each in
// its own directory, for a bounded time.
func load(dir string, workers int, d time.Duration) {
	r := newRecorder("load")
	defer r.print()
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	var done atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			base := filepath.Join(dir, "w"+strconv.Itoa(w))
			check := func(what string, t0 time.Time, err error) bool {
				if err != nil {
					err = fmt.Errorf("%s: %w", what, err)
				}
				r.op(time.Since(t0), err)
				return err == nil
			}
			t0 := time.Now()
			if !check("mkdir", t0, os.MkdirAll(base, 0o755)) {
				return
			}
			for i := 0; time.Now().Before(end); i++ {
				name := filepath.Join(base, "f"+strconv.Itoa(i%50))
				size := 1 + rng.IntN(256<<10)
				data := chunk(w*1000003+i, size)
				t0 := time.Now()
				err := os.WriteFile(name, data, 0o644)
				if !check("write", t0, err) {
					continue
				}
				t0 = time.Now()
				got, err := os.ReadFile(name)
				if check("read", t0, err) && !bytes.Equal(got, data) {
					r.mismatch("%s: read %d bytes back, wrote %d", name, len(got), len(data))
				}
				switch i % 8 {
				case 0:
					t0 = time.Now()
					check("rename", t0, os.Rename(name, name+".r"))
					t0 = time.Now()
					check("rename back", t0, os.Rename(name+".r", name))
				case 1:
					sub := filepath.Join(base, "d"+strconv.Itoa(i))
					t0 = time.Now()
					if check("mkdir", t0, os.Mkdir(sub, 0o755)) {
						t0 = time.Now()
						check("rmdir", t0, os.Remove(sub))
					}
				case 2:
					t0 = time.Now()
					ents, err := os.ReadDir(base)
					if check("readdir", t0, err) && len(ents) == 0 {
						r.mismatch("%s listed empty", base)
					}
				case 3:
					l := name + ".l"
					t0 = time.Now()
					if check("symlink", t0, os.Symlink(filepath.Base(name), l)) {
						t0 = time.Now()
						tgt, err := os.Readlink(l)
						if check("readlink", t0, err) && tgt != filepath.Base(name) {
							r.mismatch("readlink %s = %q", l, tgt)
						}
						t0 = time.Now()
						check("unlink", t0, os.Remove(l))
					}
				case 4:
					t0 = time.Now()
					check("chmod", t0, os.Chmod(name, 0o600))
					t0 = time.Now()
					fi, err := os.Stat(name)
					if check("stat", t0, err) && fi.Mode().Perm() != 0o600 {
						r.mismatch("%s mode %v after chmod 600", name, fi.Mode())
					}
				case 5:
					t0 = time.Now()
					if check("truncate", t0, os.Truncate(name, int64(size/2))) {
						t0 = time.Now()
						fi, err := os.Stat(name)
						if check("stat", t0, err) && fi.Size() != int64(size/2) {
							r.mismatch("%s size %d after truncate to %d", name, fi.Size(), size/2)
						}
					}
				case 6:
					t0 = time.Now()
					f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
					if check("open append", t0, err) {
						t0 = time.Now()
						_, err := f.Write([]byte("tail"))
						check("append", t0, err)
						t0 = time.Now()
						check("fsync", t0, f.Sync())
						f.Close()
					}
				case 7:
					t0 = time.Now()
					check("unlink", t0, os.Remove(name))
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	r.s.Done = done.Load()
}

func writePattern(file string, size int64) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	const block = 1 << 20
	for off := int64(0); off < size; off += block {
		if _, err := f.Write(pattern(off, int(min(block, size-off)))); err != nil {
			return err
		}
	}
	return f.Sync()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: faultio seqwrite|randread|walk|load|pattern|get ...")
		os.Exit(2)
	}
	a := os.Args[2:]
	num := func(i int) int64 {
		n, err := strconv.ParseInt(a[i], 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "faultio: argument %d: %v\n", i+1, err)
			os.Exit(2)
		}
		return n
	}
	need := func(n int) {
		if len(a) != n {
			fmt.Fprintf(os.Stderr, "faultio %s: want %d arguments\n", os.Args[1], n)
			os.Exit(2)
		}
	}
	switch os.Args[1] {
	case "seqwrite":
		need(5)
		seqwrite(a[0], a[1], int(num(2)), int(num(3)), a[4])
	case "randread":
		need(3)
		randread(a[0], num(1), a[2])
	case "walk":
		need(4)
		walk(a[0], int(num(1)), int(num(2)), a[3])
	case "load":
		need(3)
		load(a[0], int(num(1)), time.Duration(num(2))*time.Second)
	case "pattern":
		need(2)
		if err := writePattern(a[0], num(1)); err != nil {
			fmt.Fprintln(os.Stderr, "faultio:", err)
			os.Exit(1)
		}
	case "get":
		need(1)
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(a[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, "faultio:", err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		io.Copy(os.Stdout, resp.Body)
	default:
		fmt.Fprintf(os.Stderr, "faultio: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}
