package install

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestChartSpeakerShutdown: speaker.shutdownDelaySeconds drives the
// speaker's --graceful-shutdown-delay and its pod's
// terminationGracePeriodSeconds (delay + 15 s unless set higher), a grace
// period too short for the delay is refused naming the key, and
// speaker.gracefulShutdownOnDrain drives --graceful-shutdown-on-drain.
func TestChartSpeakerShutdown(t *testing.T) {
	tests := []struct {
		name      string
		set       string
		wantArgs  []string
		wantGrace int64
	}{
		{"defaults", "", []string{"--graceful-shutdown-delay=5s", "--graceful-shutdown-on-drain=true"}, 20},
		{"longer delay", "speaker.shutdownDelaySeconds=30", []string{"--graceful-shutdown-delay=30s"}, 45},
		{"no delay", "speaker.shutdownDelaySeconds=0", []string{"--graceful-shutdown-delay=0s"}, 15},
		{"explicit grace above the minimum", "speaker.terminationGracePeriodSeconds=90", []string{"--graceful-shutdown-delay=5s"}, 90},
		{"drain off", "speaker.gracefulShutdownOnDrain=false", []string{"--graceful-shutdown-on-drain=false"}, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if tt.set != "" {
				args = []string{"--set", tt.set}
			}
			spk := find(decode(t, helmTemplate(t, args...)), "DaemonSet", "bgplb-speaker")
			got := containerArgs(t, spk)
			for _, want := range tt.wantArgs {
				if !slices.Contains(got, want) {
					t.Errorf("speaker args %v lack %s", got, want)
				}
			}
			grace, _, _ := unstructured.NestedFieldNoCopy(spk.Object, "spec", "template", "spec", "terminationGracePeriodSeconds")
			if fmt.Sprint(grace) != fmt.Sprint(tt.wantGrace) {
				t.Errorf("terminationGracePeriodSeconds = %v, want %d", grace, tt.wantGrace)
			}
		})
	}
	t.Run("grace shorter than the delay is refused", func(t *testing.T) {
		out, err := runErr(root, nil, tool(t, "helm"), "template", "bgplb", filepath.Join(root, "charts", "bgplb"),
			"--set", "speaker.shutdownDelaySeconds=20,speaker.terminationGracePeriodSeconds=30")
		if err == nil || !strings.Contains(fmt.Sprint(err, out), "speaker.terminationGracePeriodSeconds (30) must be at least speaker.shutdownDelaySeconds + 15 (35)") {
			t.Errorf("helm template: %v\n%s\nwant a refusal naming speaker.terminationGracePeriodSeconds", err, out)
		}
	})
}
