package logging

import "testing"

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		level, format string
		ok            bool
	}{
		{"info", "auto", true},
		{"debug", "json", true},
		{"warn", "console", true},
		{"loud", "json", false},
		{"info", "xml", false},
	} {
		t.Run(tc.level+"/"+tc.format, func(t *testing.T) {
			l, err := New(tc.level, tc.format)
			if (err == nil) != tc.ok {
				t.Fatalf("New(%q, %q) err = %v, want ok=%v", tc.level, tc.format, err, tc.ok)
			}
			if l != nil {
				l.Info("hello")
			}
		})
	}
}
