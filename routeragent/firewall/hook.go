package firewall

import _ "embed"

// FermHook is a ferm configuration snippet with a post hook that pokes the
// agent after every ferm (re)load, so the exemptions a reload deleted are
// back at once instead of within a second. Install it as FermHookPath;
// Debian's ferm.conf ends with `@include ferm.d/;`.
//
//go:embed ferm-hook.conf
var FermHook string

// FermHookPath is where the package (or `bgplb-routeragent install`)
// puts FermHook.
const FermHookPath = "/etc/ferm/ferm.d/bgplb.conf"
