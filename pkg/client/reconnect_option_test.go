package client

import (
	"strings"
	"testing"
	"time"
)

func TestReconnectTimeoutOption(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"reconnect_timeout=3s", 3 * time.Second, ""},
		{"ro,reconnect_timeout=2m", 2 * time.Minute, ""},
		{"reconnect_timeout=0s", 0, "positive duration"},
		{"reconnect_timeout=-1s", 0, "positive duration"},
		{"reconnect_timeout=soon", 0, "positive duration"},
		{"reconnect_timeout", 0, "unknown mount option"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			m, err := ParseMountOptions([]string{tc.in})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || m.ReconnectTimeout != tc.want {
				t.Fatalf("got %v, %v; want %v", m.ReconnectTimeout, err, tc.want)
			}
		})
	}
}
