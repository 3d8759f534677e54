// Package logging builds the one *zap.Logger a qtfs command injects into
// everything it starts. Library packages never build loggers of their own.
package logging

import (
	"flag"
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// New returns a logger writing to stderr at the given level ("debug",
// "info", "warn", "error"). format is "json", "console" or "auto" (console
// when stderr is a terminal, JSON otherwise, which journald keeps whole).
func New(level, format string) (*zap.Logger, error) {
	return NewTo(level, format, "stderr")
}

// NewTo is New writing to dest: "stderr" or a file path (appended to).
func NewTo(level, format, dest string) (*zap.Logger, error) {
	out := zapcore.Lock(os.Stderr)
	if dest != "stderr" {
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		out = zapcore.Lock(f)
		if format == "" || format == "auto" {
			format = "json"
		}
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	if format == "" || format == "auto" {
		format = "json"
		if term.IsTerminal(int(os.Stderr.Fd())) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("log format %q: want auto, json or console", format)
	}
	core := zapcore.NewCore(enc, out, lvl)
	return zap.New(core, zap.ErrorOutput(out)), nil
}

// Flags declares --log-level and --log-format on set, storing into level
// and format (the arguments of New).
func Flags(set *flag.FlagSet, level, format *string) {
	set.StringVar(level, "log-level", "info", "log `level`: debug, info, warn, error")
	set.StringVar(format, "log-format", "auto", "log `format`: auto, json, console")
}
