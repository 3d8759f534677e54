package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// rpcCounter reads how many FileSystem RPCs a qtfs-server has served, by
// operation, from its metrics listener (qtfs_server_ops_total, summed over
// the result label).
type rpcCounter func(ctx context.Context) (map[string]float64, error)

// serverRPCs returns the counter of the qtfs-server whose metrics listen on
// addr.
func serverRPCs(addr string) rpcCounter {
	client := &http.Client{Timeout: 5 * time.Second}
	return func(ctx context.Context) (map[string]float64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("bench: server metrics: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("bench: server metrics: %s", resp.Status)
		}
		return parseOpsTotal(bufio.NewScanner(resp.Body))
	}
}

// parseOpsTotal sums qtfs_server_ops_total{op="X",...} N lines by op.
func parseOpsTotal(sc *bufio.Scanner) (map[string]float64, error) {
	const name = "qtfs_server_ops_total{"
	out := map[string]float64{}
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		op := ""
		for _, kv := range strings.Split(line[len(name):end], ",") {
			if v, ok := strings.CutPrefix(kv, `op="`); ok {
				op = strings.TrimSuffix(v, `"`)
			}
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil || op == "" {
			continue
		}
		out[op] += v
	}
	return out, sc.Err()
}

// rpcDelta is after - before, without the operations that did not move.
func rpcDelta(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for op, v := range after {
		if d := v - before[op]; d > 0 {
			out[op] = d
		}
	}
	return out
}

// rpcSummary is the median count of each operation over the runs that have
// counts, and the median total.
func rpcSummary(samples []Sample) (total float64, byOp map[string]float64, ok bool) {
	var totals []float64
	perOp := map[string][]float64{}
	runs := 0
	for _, s := range samples {
		if s.Err != "" || s.RPCs == nil {
			continue
		}
		runs++
		t := 0.0
		for op, v := range s.RPCs {
			perOp[op] = append(perOp[op], v)
			t += v
		}
		totals = append(totals, t)
	}
	if runs == 0 {
		return 0, nil, false
	}
	byOp = map[string]float64{}
	for op, vs := range perOp {
		for len(vs) < runs {
			vs = append(vs, 0) // runs where the op did not occur
		}
		byOp[op] = median(vs)
	}
	return median(totals), byOp, true
}

// rpcCell formats a total and its largest operations (those above 2% of
// the total, at most six).
func rpcCell(total float64, byOp map[string]float64) string {
	type kv struct {
		op string
		n  float64
	}
	var ops []kv
	for op, n := range byOp {
		if n > 0 {
			ops = append(ops, kv{op, n})
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].n != ops[j].n {
			return ops[i].n > ops[j].n
		}
		return ops[i].op < ops[j].op
	})
	var parts []string
	for _, o := range ops {
		if len(parts) == 6 || o.n < total*0.02 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s", o.op, count(int(o.n+0.5))))
	}
	s := count(int(total + 0.5))
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}
