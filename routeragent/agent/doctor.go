package agent

import (
	"fmt"
	"io"
)

// doctorCmd runs the doctor checks (package doctor, written alongside).
func doctorCmd(cfgPath, socket string, asJSON bool, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "doctor: not wired yet")
	return ExitFailure
}
