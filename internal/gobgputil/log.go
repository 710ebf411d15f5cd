package gobgputil

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// Logger sends GoBGP's logs to a slog.Logger (the router agent's, or the
// speaker's logr through logr.ToSlogHandler), with GoBGP's fields as sorted
// attributes. GoBGP's Info is chatty (every configuration step and state
// change, which both programs log themselves), so it becomes slog's Debug,
// and GoBGP's Debug (every message) one step below that.
type Logger struct {
	l *slog.Logger
}

// NewLogger returns a GoBGP logger writing to l.
func NewLogger(l *slog.Logger) *Logger { return &Logger{l: l} }

const (
	levelInfo  = slog.LevelDebug
	levelDebug = slog.LevelDebug - 4
)

func (g *Logger) log(lv slog.Level, msg string, f gobgplog.Fields) {
	if !g.l.Enabled(context.Background(), lv) {
		return
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(f))
	for _, k := range keys {
		args = append(args, k, fmt.Sprint(f[k]))
	}
	g.l.Log(context.Background(), lv, msg, args...)
}

// Panic and Fatal log and panic: GoBGP calls them on broken invariants (a
// nil NLRI, an unknown message type) and its code after the call assumes it
// does not return, as with its default logger, which exits.
func (g *Logger) Panic(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f); panic(msg) }
func (g *Logger) Fatal(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f); panic(msg) }
func (g *Logger) Error(msg string, f gobgplog.Fields) { g.log(slog.LevelError, msg, f) }
func (g *Logger) Warn(msg string, f gobgplog.Fields)  { g.log(slog.LevelWarn, msg, f) }
func (g *Logger) Info(msg string, f gobgplog.Fields)  { g.log(levelInfo, msg, f) }
func (g *Logger) Debug(msg string, f gobgplog.Fields) { g.log(levelDebug, msg, f) }

// SetLevel is ignored: the slog.Logger's handler decides.
func (g *Logger) SetLevel(gobgplog.LogLevel) {}

// GetLevel tells GoBGP which calls are worth building fields for.
func (g *Logger) GetLevel() gobgplog.LogLevel {
	switch {
	case g.l.Enabled(context.Background(), levelDebug):
		return gobgplog.DebugLevel
	case g.l.Enabled(context.Background(), levelInfo):
		return gobgplog.InfoLevel
	case g.l.Enabled(context.Background(), slog.LevelWarn):
		return gobgplog.WarnLevel
	}
	return gobgplog.ErrorLevel
}
