package clientconf

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/qtfs/qtfs/pkg/config"
)

// Run holds the keys of client.yaml that only `qtfs-client run` reads:
// what the offload environment holds.
type Run struct {
	// Root is the chroot's directory.
	Root string `yaml:"root"`
	// Binds are DPU directories bound at the same path: "PATH[:ro|rw][,optional]".
	Binds []string `yaml:"binds"`
	// Tmpfs are empty tmpfs mounts: "PATH[:MODE]" (octal, default 0755).
	Tmpfs []string `yaml:"tmpfs"`
	// LocalProc is where the DPU's own proc goes; "" for none.
	LocalProc *string `yaml:"local_proc"`
	// Dev binds the DPU's /dev (default true).
	Dev *bool `yaml:"dev"`
	// Links are symlinks inside the chroot: "PATH:TARGET" (/var/run:/run).
	Links []string `yaml:"links"`
	// Mounts are host paths mounted at the same path: "PATH[:OPTIONS]"
	// with the -o options of `qtfs-client mount` (ro, cache=none, ...).
	Mounts []string `yaml:"mounts"`
	// Proxies are unix socket proxies.
	Proxies []Proxy `yaml:"proxies"`
	// Shims are binary names that run on the host through rexec.
	Shims []string `yaml:"shims"`
	// ShimDir is where the shims appear inside the chroot (on PATH).
	ShimDir string `yaml:"shim_dir"`
	// Rexec is the DPU path of the rexec binary (default: next to
	// qtfs-client).
	Rexec string `yaml:"rexec"`
	// MetricsListen serves Prometheus metrics on this address.
	MetricsListen string `yaml:"metrics_listen"`
	// ReconnectTimeout bounds how long a filesystem call, or a new
	// connection to a proxied socket, waits for a lost server (restarted,
	// link cut) to come back before it fails: a Go duration such as "30s"
	// (default: the filesystem client's).
	ReconnectTimeout string `yaml:"reconnect_timeout"`
}

// Proxy is one socket proxy of Run.
type Proxy struct {
	// Listen is the socket's path inside the chroot.
	Listen string `yaml:"listen"`
	// Host is the host socket it forwards to (default: Listen).
	Host string `yaml:"host"`
	// Mode is the socket's permission, octal (default 0660).
	Mode string `yaml:"mode"`
	// API is the protocol the host socket speaks, when the proxy must
	// understand it: "containerd" carries task stdio FIFOs and OCI specs
	// across (pkg/ctrdproxy); "" moves bytes.
	API string `yaml:"api"`
}

// RunKeys are the top-level keys of Run, sorted.
var RunKeys = yamlKeys(reflect.TypeOf(Run{}))

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// File is client.yaml as a command that does not run the offload reads
// it: the Settings, and Run's keys accepted with their values unread (a
// value only `qtfs-client run` judges never stops rexec).
type File struct {
	Settings `yaml:",inline"`
	// Unread holds Run's keys, and any unknown key Load then refuses.
	Unread map[string]yaml.Node `yaml:",inline"`
}

// Source says how a command reads its settings.
type Source struct {
	// Interleaved lets flags follow positional arguments (see config.Source).
	Interleaved bool
	// ServerEnv, when set, is an environment variable that names the
	// server and wins over QTFS_SERVER and the file, not over --server.
	ServerEnv string
}

// Load fills dst (a *File, or a struct with Settings and Run inline, whose
// flags set holds) from the config file, the environment and args, and
// returns the file it read ("" for none) and the positional arguments.
func (src Source) Load(set *flag.FlagSet, args []string, dst any) (string, []string, error) {
	file, rest, err := config.Source{ConfigFlag: "config", DefaultPath: DefaultConfigPath, Interleaved: src.Interleaved}.Load(set, args, dst)
	if err != nil {
		return file, nil, err
	}
	f, _ := dst.(*File)
	if f != nil {
		if err := f.checkKeys(file); err != nil {
			return file, nil, err
		}
	}
	if src.ServerEnv != "" {
		serverFlag := false
		set.Visit(func(fl *flag.Flag) { serverFlag = serverFlag || fl.Name == "server" })
		if v := os.Getenv(src.ServerEnv); v != "" && !serverFlag {
			if err := set.Lookup("server").Value.Set(v); err != nil {
				return file, nil, fmt.Errorf("%s=%q: %w", src.ServerEnv, v, err)
			}
		}
	}
	return file, rest, nil
}

// checkKeys refuses the keys of Unread that are not Run's, in the words
// of the config package's strict decoding: "line N: unknown key K".
func (f *File) checkKeys(file string) error {
	var bad []string
	for k := range f.Unread {
		if i := sort.SearchStrings(RunKeys, k); i == len(RunKeys) || RunKeys[i] != k {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	data, _ := os.ReadFile(file)
	lines := KeyLines(data)
	sort.Slice(bad, func(i, j int) bool {
		return lines[bad[i]] < lines[bad[j]] || lines[bad[i]] == lines[bad[j]] && bad[i] < bad[j]
	})
	msg := make([]string, len(bad))
	for i, k := range bad {
		msg[i] = fmt.Sprintf("line %d: unknown key %s", lines[k], k)
	}
	return fmt.Errorf("config %s: %s", file, strings.Join(msg, " "))
}

// KeyLines maps the keys of a config file to their lines: "root",
// "mounts[2]", "proxies[0].host".
func KeyLines(data []byte) map[string]int {
	var doc yaml.Node
	lines := map[string]int{}
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return lines
	}
	top := doc.Content[0].Content
	for i := 0; i+1 < len(top); i += 2 {
		k, v := top[i].Value, top[i+1]
		lines[k] = top[i].Line
		if v.Kind != yaml.SequenceNode {
			continue
		}
		for j, item := range v.Content {
			ik := fmt.Sprintf("%s[%d]", k, j)
			lines[ik] = item.Line
			if item.Kind == yaml.MappingNode {
				for n := 0; n+1 < len(item.Content); n += 2 {
					lines[ik+"."+item.Content[n].Value] = item.Content[n].Line
				}
			}
		}
	}
	return lines
}
