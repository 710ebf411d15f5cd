package bfd

import (
	"log/slog"

	"github.com/go-logr/logr"
)

// slogFrom hands internal/bfd (which logs with slog, as the router agent
// does) the speaker's logr, as speaker/bgp does for GoBGP.
func slogFrom(l logr.Logger) *slog.Logger {
	if l.GetSink() == nil {
		return nil
	}
	return slog.New(logr.ToSlogHandler(l.WithName("bfd")))
}
