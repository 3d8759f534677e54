package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestParseOpsTotal(t *testing.T) {
	text := `# HELP qtfs_server_ops_total FileSystem operations served.
# TYPE qtfs_server_ops_total counter
qtfs_server_ops_total{errno="OK",op="Lookup"} 10
qtfs_server_ops_total{errno="ENOENT",op="Lookup"} 5
qtfs_server_ops_total{errno="OK",op="Create"} 3
qtfs_server_ops_total{op="Read",errno="OK"} 2.5e+01
qtfs_server_op_duration_seconds_count{op="Lookup"} 15
qtfs_server_ops_totally_different{op="X"} 1
`
	got, err := parseOpsTotal(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"Lookup": 15, "Create": 3, "Read": 25}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parseOpsTotal = %v, want %v", got, want)
	}
}

func TestRPCSummaryAndCell(t *testing.T) {
	tests := []struct {
		name    string
		samples []Sample
		ok      bool
		cell    string
	}{
		{"no counts", []Sample{{Value: 1}}, false, ""},
		{"failed runs are left out", []Sample{{Err: "x", RPCs: map[string]float64{"Lookup": 99}}}, false, ""},
		{
			"medians, an op missing in one run counts 0",
			[]Sample{
				{RPCs: map[string]float64{"Lookup": 100, "Create": 100, "Getattr": 1}},
				{RPCs: map[string]float64{"Lookup": 120, "Create": 100}},
				{RPCs: map[string]float64{"Lookup": 110, "Create": 100, "Getattr": 3}},
			},
			true, "213 (Lookup 110, Create 100)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total, byOp, ok := rpcSummary(tc.samples)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if got := rpcCell(total, byOp); got != tc.cell {
				t.Fatalf("cell = %q, want %q", got, tc.cell)
			}
		})
	}
}

// TestServerRPCsDelta reads counts from a real HTTP metrics endpoint.
func TestServerRPCsDelta(t *testing.T) {
	n := 0
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		n++
		fmt.Fprintf(w, "qtfs_server_ops_total{errno=\"OK\",op=\"Lookup\"} %d\nqtfs_server_ops_total{errno=\"OK\",op=\"Statfs\"} 1\n", 10*n)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	count := serverRPCs(l.Addr().String())
	a, err := count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := rpcDelta(a, b); fmt.Sprint(d) != "map[Lookup:10]" {
		t.Fatalf("delta = %v, want map[Lookup:10]", d)
	}
	if _, err := serverRPCs("127.0.0.1:1")(context.Background()); err == nil {
		t.Fatal("a closed port gave no error")
	}
}
