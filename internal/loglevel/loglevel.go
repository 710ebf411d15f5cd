// Package loglevel is the --log-level flag of bgplb-controller and
// bgplb-speaker, with the levels bgplb-routeragent's --log-level and
// log.level take: debug, info, warn, error.
package loglevel

import (
	"fmt"
	"strings"

	"go.uber.org/zap/zapcore"
)

// Levels are the values --log-level takes in all three programs.
var Levels = []string{"debug", "info", "warn", "error"}

// zapLevels maps them onto zap for controller-runtime's logr. logr has no
// warning level, so warn keeps errors only in the cluster programs (their
// informational logs are logr Info). debug enables logr V(1) to V(4): the
// programs' own debug lines and GoBGP's informational ones (which the GoBGP
// adapter writes at slog's Debug, V(4)), not GoBGP's per-message debug
// (V(8)), matching the router agent's debug.
var zapLevels = map[string]zapcore.Level{
	"debug": zapcore.Level(-4),
	"info":  zapcore.InfoLevel,
	"warn":  zapcore.WarnLevel,
	"error": zapcore.ErrorLevel,
}

// Flag is a flag.Value (and pflag.Value) holding one of Levels, or empty
// when not given.
type Flag struct{ level string }

func (f *Flag) String() string { return f.level }

// Set accepts one of Levels.
func (f *Flag) Set(s string) error {
	if _, ok := zapLevels[s]; !ok {
		return fmt.Errorf("%q is not a log level: use one of %s", s, strings.Join(Levels, ", "))
	}
	f.level = s
	return nil
}

// Type names the value in pflag's help.
func (f *Flag) Type() string { return "level" }

// Usage is the flag's help text.
func Usage() string { return "log level: " + strings.Join(Levels, ", ") }

// Zap returns the zap level to use, and false when the flag was not given
// (then controller-runtime's --zap-log-level, or its default, stays).
func (f *Flag) Zap() (zapcore.Level, bool) {
	if f.level == "" {
		return 0, false
	}
	return zapLevels[f.level], true
}
