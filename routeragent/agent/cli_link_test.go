package agent

import "io"

// CLIMain is bgplb-routeragent's command line (cli.Main). The test binary
// re-executes itself as the agent (see TestMain) and runs `status` and
// `poke` in process, but package cli imports this package, so only the
// external test package can import it: cli_link_ext_test.go sets CLIMain
// when the test binary starts, before TestMain runs. Nothing else sets it.
var CLIMain func(args []string, stdout, stderr io.Writer) int
