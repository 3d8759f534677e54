package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// StringList is a repeatable flag (and a YAML list). Within one source the
// values accumulate; a later source replaces them.
type StringList struct {
	p     *[]string
	fresh bool
}

// NewStringList returns a flag.Value that stores into *p.
func NewStringList(p *[]string) *StringList { return &StringList{p: p} }

// Set implements flag.Value.
func (l *StringList) Set(v string) error {
	if l.fresh {
		*l.p = nil
		l.fresh = false
	}
	*l.p = append(*l.p, v)
	return nil
}

// String implements flag.Value.
func (l *StringList) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// EnvName is the environment variable that names the flag's setting.
func EnvName(flagName string) string {
	return "QTFS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Source says where a command's settings come from.
type Source struct {
	// ConfigFlag is the flag (and so the key of the environment variable)
	// that names the YAML file, e.g. "config".
	ConfigFlag string
	// DefaultPath is read when no file is named and it exists.
	DefaultPath string
	// Interleaved lets flags follow positional arguments ("mount SRC DST -f");
	// otherwise parsing stops at the first positional argument, as a
	// command that runs another command ("rexec runc --help") needs.
	Interleaved bool
}

// Load fills dst, the settings struct the flags of set point into, from
// the YAML file, then the environment, then args. The file is the value of
// the config flag in args, else its environment variable, else DefaultPath
// when that file exists. It returns the path of the file it read ("" for
// none) and the positional arguments.
func (src Source) Load(set *flag.FlagSet, args []string, dst any) (string, []string, error) {
	configFlag := src.ConfigFlag
	path, explicit := configPath(args, configFlag, src.DefaultPath)
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := decodeStrict(data, dst); err != nil {
				return path, nil, fmt.Errorf("config %s: %w", path, err)
			}
		case errors.Is(err, fs.ErrNotExist) && !explicit:
			path = ""
		default:
			return path, nil, fmt.Errorf("config: %w", err)
		}
	}

	var envErr error
	markFresh(set)
	set.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(EnvName(f.Name))
		if !ok || f.Name == configFlag || commandOnly[f.Name] || envErr != nil {
			return
		}
		if _, isList := f.Value.(*StringList); isList {
			for _, part := range strings.Split(v, ",") {
				if part = strings.TrimSpace(part); part != "" {
					if err := f.Value.Set(part); err != nil {
						envErr = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err)
					}
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return path, nil, fmt.Errorf("environment: %w", envErr)
	}
	markFresh(set)
	var positional []string
	for {
		if err := set.Parse(args); err != nil {
			return path, nil, err
		}
		rest := set.Args()
		consumed := len(args) - len(rest)
		if !src.Interleaved || len(rest) == 0 || (consumed > 0 && args[consumed-1] == "--") {
			return path, append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// commandOnly are flags that ask for an action rather than name a
// setting; the environment never sets them.
var commandOnly = map[string]bool{"version": true, "help": true, "h": true}

func markFresh(set *flag.FlagSet) {
	set.VisitAll(func(f *flag.Flag) {
		if l, ok := f.Value.(*StringList); ok {
			l.fresh = true
		}
	})
}

// configPath finds the config file named on the command line or in the
// environment; explicit is true when the user named it.
func configPath(args []string, configFlag, defaultPath string) (path string, explicit bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			break
		}
		name := strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(name, configFlag+"="); ok {
			return v, true
		}
		if name == configFlag && i+1 < len(args) {
			return args[i+1], true
		}
	}
	if v := os.Getenv(EnvName(configFlag)); v != "" {
		return v, true
	}
	return defaultPath, false
}

var yamlUnknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// decodeStrict decodes YAML into dst, refusing unknown keys.
func decodeStrict(data []byte, dst any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		msg := yamlUnknownField.ReplaceAllString(err.Error(), "line $1: unknown key $2")
		msg = strings.TrimPrefix(msg, "yaml: ")
		msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
		return errors.New(strings.Join(strings.Fields(msg), " "))
	}
	return nil
}
