package server

import (
	"flag"
	"reflect"
	"strings"
	"testing"

	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
)

func TestParseExport(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want hostfs.Export
		err  string
	}{
		{in: "/srv", want: hostfs.Export{Path: "/srv"}},
		{in: "/srv/../data/", want: hostfs.Export{Path: "/data"}},
		{in: "/srv:ro", want: hostfs.Export{Path: "/srv", ReadOnly: true}},
		{in: "/srv:rw", want: hostfs.Export{Path: "/srv"}},
		{in: "/srv:ro:ops=read+lock", want: hostfs.Export{Path: "/srv", ReadOnly: true, Ops: []string{"read", "lock"}}},
		{in: "/srv:ops=Lookup+Getattr", want: hostfs.Export{Path: "/srv", Ops: []string{"Lookup", "Getattr"}}},
		{in: "/srv:ops=read:ro", want: hostfs.Export{Path: "/srv", ReadOnly: true, Ops: []string{"read"}}},
		{in: "/srv:ops=", err: "empty operation name"},
		{in: "/srv:ops=read++write", err: "empty operation name"},
		{in: "/srv:ops=read:ops=write", err: "ops= given twice"},
		{in: "/srv:rx", err: `unknown option "rx"`},
		{in: "/srv:", err: `unknown option ""`},
		{in: "srv:ro", err: "must be absolute"},
		{in: "", err: "must be absolute"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseExport(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"64K", 64 << 10, true},
		{"256M", 256 << 20, true},
		{"256MiB", 256 << 20, true},
		{"2G", 2 << 30, true},
		{"2GB", 2 << 30, true},
		{" 1k ", 1 << 10, true},
		{"", 0, false},
		{"M", 0, false},
		{"-1", 0, false},
		{"1T", 0, false},
		{"9223372036854775807G", 0, false},
		{"1.5M", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

// TestLimitSettings: the limits are flags, config keys and environment
// variables, and reach hostfs.Limits.
func TestLimitSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want hostfs.Limits
		err  string
	}{
		{name: "defaults", want: hostfs.Limits{}},
		{name: "flags", args: []string{"--max-sessions", "8", "--max-handles-per-session", "100", "--max-inflight-per-session", "16", "--max-inflight-bytes-per-session", "64M"},
			want: hostfs.Limits{MaxSessions: 8, MaxHandlesPerSession: 100, MaxInflightPerSession: 16, MaxInflightBytesPerSession: 64 << 20}},
		{name: "environment", env: map[string]string{"QTFS_MAX_SESSIONS": "3", "QTFS_MAX_INFLIGHT_BYTES_PER_SESSION": "1G"},
			want: hostfs.Limits{MaxSessions: 3, MaxInflightBytesPerSession: 1 << 30}},
		{name: "negative", args: []string{"--max-sessions", "-1"}, err: "must not be negative"},
		{name: "bad size", args: []string{"--max-inflight-bytes-per-session", "lots"}, err: "max-inflight-bytes-per-session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s Settings
			set := flag.NewFlagSet("qtfs-server", flag.ContinueOnError)
			s.Flags(set)
			args := append([]string{"--config", "", "--listen", "unix:///run/q.sock", "--export", "/srv"}, tc.args...)
			if _, _, err := (config.Source{ConfigFlag: "config"}).Load(set, args, &s); err != nil {
				t.Fatal(err)
			}
			v, err := s.validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.limits != tc.want {
				t.Fatalf("limits %+v, want %+v", v.limits, tc.want)
			}
		})
	}
}
