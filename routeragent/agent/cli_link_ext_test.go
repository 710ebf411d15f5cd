package agent_test

import (
	"github.com/bgplb/bgplb/routeragent/agent"
	"github.com/bgplb/bgplb/routeragent/cli"
)

func init() { agent.CLIMain = cli.Main }
