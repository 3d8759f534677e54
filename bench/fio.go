package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// fioResult is what the report takes from one fio job (group-reported).
type fioResult struct {
	BWBytes   float64 // bytes per second
	IOPS      float64
	LatMeanNs float64 // mean total latency per I/O
	LatP99Ns  float64 // 99th percentile completion latency
	IOBytes   int64
}

// fioJSON is the part of fio's --output-format=json this package reads.
type fioJSON struct {
	Jobs []struct {
		Jobname string  `json:"jobname"`
		Error   int     `json:"error"`
		Read    fioDDir `json:"read"`
		Write   fioDDir `json:"write"`
	} `json:"jobs"`
}

type fioDDir struct {
	IOBytes int64   `json:"io_bytes"`
	BWBytes float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
	LatNs   struct {
		Mean float64 `json:"mean"`
	} `json:"lat_ns"`
	ClatNs struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// parseFio reads fio's JSON output for a job that read (write=false) or
// wrote. fio may print warnings before the JSON document; they are skipped.
func parseFio(b []byte, write bool) (fioResult, error) {
	i := strings.IndexByte(string(b), '{')
	if i < 0 {
		return fioResult{}, fmt.Errorf("bench: fio: no JSON in output: %.200q", b)
	}
	var doc fioJSON
	if err := json.Unmarshal(b[i:], &doc); err != nil {
		return fioResult{}, fmt.Errorf("bench: fio: %w", err)
	}
	if len(doc.Jobs) == 0 {
		return fioResult{}, fmt.Errorf("bench: fio: no jobs in output")
	}
	j := doc.Jobs[0]
	if j.Error != 0 {
		return fioResult{}, fmt.Errorf("bench: fio job %s: error %d", j.Jobname, j.Error)
	}
	d := j.Read
	if write {
		d = j.Write
	}
	if d.IOBytes == 0 {
		return fioResult{}, fmt.Errorf("bench: fio job %s: moved no data", j.Jobname)
	}
	return fioResult{BWBytes: d.BWBytes, IOPS: d.IOPS, LatMeanNs: d.LatNs.Mean, LatP99Ns: d.ClatNs.Percentile["99.000000"], IOBytes: d.IOBytes}, nil
}

// runFio runs fio with args (job options, without output options) and
// parses the result. Its JSON goes to a file in tmp, away from warnings.
func runFio(ctx context.Context, tmp string, write bool, args ...string) (fioResult, error) {
	out := filepath.Join(tmp, "fio.json")
	_ = os.Remove(out)
	cmd := exec.CommandContext(ctx, "fio", append(args, "--output-format=json", "--output="+out)...)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return fioResult{}, fmt.Errorf("bench: fio %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(msg)))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return fioResult{}, fmt.Errorf("bench: fio output: %w", err)
	}
	return parseFio(b, write)
}
