package hostexec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultEnvDeny is the environment deny-list used when Options.EnvDeny is
// nil: variables that make the dynamic loader load code the caller names.
var DefaultEnvDeny = []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"}

// Exit codes for runs that never started, as a shell reports them.
const (
	CodeCannotRun = 126 // not allowed, not executable, bad cwd or files
	CodeNotFound  = 127 // no such binary on the host
)

// runError is a run that could not start: its exit code and the message
// the user sees.
type runError struct {
	code   int32
	result string
	msg    string
}

func (e *runError) Error() string { return e.msg }

// checkAllowEntry checks one configured allow-list entry: an absolute path
// or a bare name (looked up in PATH at each request).
func checkAllowEntry(e string) error {
	switch {
	case e == "":
		return errors.New("empty entry")
	case strings.ContainsRune(e, 0):
		return errors.New("contains NUL")
	case filepath.IsAbs(e):
		return nil
	case strings.Contains(e, "/"):
		return fmt.Errorf("%q: give an absolute path or a bare name looked up in PATH", e)
	}
	return nil
}

// resolve finds the executable file a binary names on this host: an
// absolute path, or a bare name looked up in the server's PATH, with all
// symlinks followed. The error is a *runError (127 when it does not exist).
func resolve(bin string) (string, error) {
	p := bin
	if !filepath.IsAbs(bin) {
		if strings.Contains(bin, "/") {
			return "", &runError{CodeCannotRun, resultRefused, fmt.Sprintf("%s: a relative path cannot be resolved on the host: give an absolute path or a bare name", bin)}
		}
		lp, err := exec.LookPath(bin)
		if err != nil {
			return "", &runError{CodeNotFound, resultNotFound, fmt.Sprintf("%s: not found in the host's PATH (%s)", bin, os.Getenv("PATH"))}
		}
		p = lp
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", &runError{CodeNotFound, resultNotFound, fmt.Sprintf("%s: no such file on the host", bin)}
		}
		return "", &runError{CodeCannotRun, resultFailed, fmt.Sprintf("%s: %v", bin, err)}
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", &runError{CodeCannotRun, resultFailed, fmt.Sprintf("%s: %v", bin, err)}
	}
	return real, nil
}

// allowed reports whether the resolved path is one of the allow-list's
// entries, each resolved now.
func allowed(allow []string, real string) bool {
	for _, a := range allow {
		if r, err := resolve(a); err == nil && r == real {
			return true
		}
	}
	return false
}

// filterEnv drops malformed entries (no '=', empty name) and the denied
// names; later duplicates win, as a shell does. The result is never nil,
// so exec.Cmd never falls back to the server's own environment.
func filterEnv(env [][]byte, deny []string) []string {
	out := make([]string, 0, len(env))
	index := map[string]int{}
	for _, kv := range env {
		s := string(kv)
		name, _, ok := strings.Cut(s, "=")
		if !ok || name == "" || strings.ContainsRune(s, 0) || denied(name, deny) {
			continue
		}
		if i, dup := index[name]; dup {
			out[i] = s
			continue
		}
		index[name] = len(out)
		out = append(out, s)
	}
	return out
}

func denied(name string, deny []string) bool {
	for _, d := range deny {
		if prefix, ok := strings.CutSuffix(d, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == d {
			return true
		}
	}
	return false
}
