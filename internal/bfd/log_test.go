package bfd

import (
	"context"
	"log/slog"
	"testing"
)

// testLogger sends the Manager's logs to t.Log, prefixed with the
// namespace, so that a failing test shows both sides' state changes.
func testLogger(t testing.TB, prefix string) *slog.Logger {
	return slog.New(&tHandler{t: t, prefix: prefix})
}

type tHandler struct {
	t      testing.TB
	prefix string
	attrs  []slog.Attr
}

func (h *tHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *tHandler) Handle(_ context.Context, r slog.Record) error {
	s := h.prefix + ": " + r.Message
	for _, a := range h.attrs {
		s += " " + a.String()
	}
	r.Attrs(func(a slog.Attr) bool { s += " " + a.String(); return true })
	h.t.Log(s)
	return nil
}

func (h *tHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tHandler{t: h.t, prefix: h.prefix, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *tHandler) WithGroup(string) slog.Handler { return h }
