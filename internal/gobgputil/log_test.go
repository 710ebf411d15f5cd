package gobgputil

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

func TestLoggerLevels(t *testing.T) {
	for _, tc := range []struct {
		level    slog.Level
		want     gobgplog.LogLevel
		shown    []string // GoBGP methods whose message is written
		notShown []string
	}{
		{level: slog.LevelInfo, want: gobgplog.WarnLevel, shown: []string{"error", "warn"}, notShown: []string{"info", "debug"}},
		{level: slog.LevelDebug, want: gobgplog.InfoLevel, shown: []string{"error", "warn", "info"}, notShown: []string{"debug"}},
		{level: slog.LevelDebug - 4, want: gobgplog.DebugLevel, shown: []string{"error", "warn", "info", "debug"}},
		{level: slog.LevelError, want: gobgplog.ErrorLevel, shown: []string{"error"}, notShown: []string{"warn", "info", "debug"}},
	} {
		var buf bytes.Buffer
		l := NewLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})))
		if got := l.GetLevel(); got != tc.want {
			t.Errorf("level %v: GetLevel = %v, want %v", tc.level, got, tc.want)
		}
		f := gobgplog.Fields{"Topic": "Peer", "Key": "192.0.2.1"}
		l.Error("error", f)
		l.Warn("warn", f)
		l.Info("info", f)
		l.Debug("debug", f)
		out := buf.String()
		for _, m := range tc.shown {
			if !strings.Contains(out, "msg="+m+" Key=192.0.2.1 Topic=Peer") {
				t.Errorf("level %v: %q not written with sorted fields:\n%s", tc.level, m, out)
			}
		}
		for _, m := range tc.notShown {
			if strings.Contains(out, "msg="+m+" ") {
				t.Errorf("level %v: %q written:\n%s", tc.level, m, out)
			}
		}
	}
}

func TestLoggerFatalPanics(t *testing.T) {
	var buf bytes.Buffer
	l := NewLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	defer func() {
		if recover() == nil {
			t.Error("Fatal returned: GoBGP's code after Fatal assumes it does not")
		}
		if !strings.Contains(buf.String(), "level=ERROR msg=\"path's nlri is nil\"") {
			t.Errorf("Fatal not logged as an error: %s", buf.String())
		}
	}()
	l.Fatal("path's nlri is nil", nil)
}
