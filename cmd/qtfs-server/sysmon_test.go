package main

import (
	"slices"
	"testing"
)

func TestSysmonEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    []string
		changed bool
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + sysmonSetting}, true},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + sysmonSetting, "A=1"}, true},
		{"other settings kept", []string{"GODEBUG=madvdontneed=1"}, []string{"GODEBUG=madvdontneed=1," + sysmonSetting}, true},
		{"schedtrace=0 is a choice", []string{"GODEBUG=schedtrace=0"}, []string{"GODEBUG=schedtrace=0"}, false},
		{"schedtrace among others", []string{"X=1", "GODEBUG=a=1,schedtrace=1000"}, []string{"X=1", "GODEBUG=a=1,schedtrace=1000"}, false},
		{"only the first GODEBUG counts", []string{"GODEBUG=a=1", "GODEBUG=schedtrace=0"}, []string{"GODEBUG=a=1," + sysmonSetting, "GODEBUG=schedtrace=0"}, true},
		{"a name that only ends in GODEBUG", []string{"XGODEBUG=schedtrace=0"}, []string{"XGODEBUG=schedtrace=0", "GODEBUG=" + sysmonSetting}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			got, changed := sysmonEnv(in)
			if changed != tc.changed || !slices.Equal(got, tc.want) {
				t.Errorf("sysmonEnv(%q) = %q, %v; want %q, %v", tc.env, got, changed, tc.want, tc.changed)
			}
			if !slices.Equal(in, tc.env) {
				t.Errorf("sysmonEnv changed its argument to %q", in)
			}
		})
	}
}
