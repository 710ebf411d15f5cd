package loglevel

import (
	"flag"
	"io"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

func TestFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    zapcore.Level
		set     bool
		wantErr string
	}{
		{args: nil},
		{args: []string{"--log-level=debug"}, want: -4, set: true},
		{args: []string{"--log-level=info"}, want: zapcore.InfoLevel, set: true},
		{args: []string{"--log-level", "warn"}, want: zapcore.WarnLevel, set: true},
		{args: []string{"--log-level=error"}, want: zapcore.ErrorLevel, set: true},
		{args: []string{"--log-level=verbose"}, wantErr: `"verbose" is not a log level: use one of debug, info, warn, error`},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var f Flag
		fs.Var(&f, "log-level", Usage())
		err := fs.Parse(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		got, set := f.Zap()
		if got != tc.want || set != tc.set {
			t.Errorf("%v: Zap() = %v, %v; want %v, %v", tc.args, got, set, tc.want, tc.set)
		}
	}
}
