package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/sysctl"
	"github.com/google/nftables"
)

// GatherConfig says what to look at.
type GatherConfig struct {
	// LANInterfaces, ServiceSubnets, FirewallMode and Protocols come from
	// the agent's configuration.
	LANInterfaces  []string
	ServiceSubnets []netip.Prefix
	FirewallMode   config.FirewallMode
	Protocols      []string
	// FirewallBackend is firewall.backend.
	FirewallBackend config.FirewallBackend
	// Routes, when the agent knows them, is copied into Input.
	Routes *Routes

	// SysctlRoot is the sysctl tree ("" = /proc/sys).
	SysctlRoot string
	// ProcNet is the proc net directory ("" = /proc/thread-self/net, which
	// is this thread's network namespace).
	ProcNet string
	// Runners opens iptables (nil = the real tools).
	Runners firewall.RunnerFactory
	// NoNft skips reading native nftables.
	NoNft bool
	// Nft opens native nftables (nil = netlink in this thread's network
	// namespace).
	Nft firewall.NftConnFactory
}

// Gather reads the host into an Input. It changes nothing: a legacy filter
// table that does not exist is not listed (listing would create it).
func Gather(ctx context.Context, cfg GatherConfig) (Input, error) {
	in := Input{
		LANInterfaces:   cfg.LANInterfaces,
		ServiceSubnets:  cfg.ServiceSubnets,
		FirewallMode:    cfg.FirewallMode,
		Protocols:       cfg.Protocols,
		FirewallBackend: cfg.FirewallBackend,
		Routes:          cfg.Routes,
		RPFilter:        map[string]int{},
	}
	if in.FirewallMode == "" {
		in.FirewallMode = config.FirewallExempt
	}
	procNet := cfg.ProcNet
	if procNet == "" {
		procNet = "/proc/thread-self/net"
	}

	var err error
	if in.IPForward, err = sysctl.Get(cfg.SysctlRoot, "net/ipv4/ip_forward"); err != nil {
		in.IPForward = -1
	}
	rep, err := sysctl.Redirects{Root: cfg.SysctlRoot}.Read(cfg.LANInterfaces)
	if err != nil {
		in.RedirectsErr = err.Error()
	}
	in.Redirects = rep
	for _, name := range append([]string{"all"}, cfg.LANInterfaces...) {
		v, err := sysctl.Get(cfg.SysctlRoot, filepath.Join("net/ipv4/conf", name, "rp_filter"))
		if err != nil {
			v = -1
		}
		in.RPFilter[name] = v
	}

	runners := cfg.Runners
	if runners == nil {
		runners = firewall.XtablesRunners
	}
	if in.Firewall, err = listBackends(ctx, runners, firewall.IPv4); err != nil {
		return in, err
	}
	if slices.ContainsFunc(cfg.ServiceSubnets, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
		if in.Firewall6, err = listBackends(ctx, runners, firewall.IPv6); err != nil {
			return in, err
		}
		in.IPv6 = gatherIPv6(ctx, cfg.SysctlRoot, runners)
	}

	in.ConntrackInvalid, in.ConntrackKnown, err = conntrackInvalid(filepath.Join(procNet, "stat", "nf_conntrack"))
	if err != nil {
		return in, err
	}

	if !cfg.NoNft {
		in.Nft, in.NftErr = readNft(cfg.Nft, in.IPv6 != nil)
	}
	if in.IPv6 != nil && in.Nft != nil {
		in.IPv6.RPFilter = append(in.IPv6.RPFilter, nftRPFilter6(*in.Nft)...)
	}
	return in, nil
}

// readNft reads the native ruleset through netlink (the agent's own
// reader), not by parsing `nft list ruleset`. With prerouting, the rules of
// the prerouting base chains of inet and ip6 tables are read too (where
// IPv6 reverse-path filters live), which List leaves out.
func readNft(open firewall.NftConnFactory, prerouting bool) (*firewall.NftRuleset, string) {
	if open == nil {
		open = firewall.NetlinkNft
	}
	c, err := open()
	if errors.Is(err, firewall.ErrUnavailable) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	if cl, ok := c.(io.Closer); ok {
		defer cl.Close()
	}
	rs, err := c.List()
	if err != nil {
		return nil, err.Error()
	}
	if prerouting {
		if err := readPrerouting6(c, &rs); err != nil {
			return nil, err.Error()
		}
	}
	return &rs, ""
}

// readPrerouting6 fills the rules of the prerouting base chains of the
// native inet and ip6 tables that List did not read.
func readPrerouting6(c firewall.NftConn, rs *firewall.NftRuleset) error {
	for ti := range rs.Tables {
		t := &rs.Tables[ti]
		if t.Family != nftables.TableFamilyINet && t.Family != nftables.TableFamilyIPv6 || t.OwnedByIptables() {
			continue
		}
		for ci := range t.Chains {
			ch := &t.Chains[ci]
			if ch.Hook == nil || *ch.Hook != *nftables.ChainHookPrerouting || ch.Rules != nil {
				continue
			}
			rules, err := c.Rules(t.Family, t.Name, ch.Name)
			if err != nil {
				return err
			}
			ch.Rules = rules
		}
	}
	return nil
}

// listBackends lists the filter table of both backends for one family.
func listBackends(ctx context.Context, runners firewall.RunnerFactory, fam firewall.Family) (map[firewall.Backend]Listing, error) {
	out := map[firewall.Backend]Listing{}
	for _, b := range []firewall.Backend{firewall.Legacy, firewall.NFT} {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r, err := runners(b, fam)
		if errors.Is(err, firewall.ErrUnavailable) {
			continue
		}
		if err != nil {
			out[b] = Listing{Available: true, Err: err.Error()}
			continue
		}
		l := Listing{Available: true}
		ok, err := r.TableExists(firewall.TableName)
		if err == nil && ok {
			l.Lines, err = r.ListTable(firewall.TableName)
		}
		if err != nil {
			l.Err = err.Error()
		}
		out[b] = l
	}
	return out, nil
}

// conntrackInvalid sums the "invalid" column (hex, one row per CPU) of
// /proc/net/stat/nf_conntrack.
func conntrackInvalid(path string) (uint64, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	return parseConntrackStat(string(b))
}

func parseConntrackStat(s string) (uint64, bool, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) < 2 {
		return 0, false, nil
	}
	col := -1
	for i, h := range strings.Fields(lines[0]) {
		if h == "invalid" {
			col = i
		}
	}
	if col < 0 {
		return 0, false, fmt.Errorf("nf_conntrack stat: no invalid column in %q", lines[0])
	}
	var sum uint64
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if col >= len(f) {
			continue
		}
		v, err := strconv.ParseUint(f[col], 16, 64)
		if err != nil {
			return 0, false, fmt.Errorf("nf_conntrack stat: %w", err)
		}
		sum += v
	}
	return sum, true, nil
}

// PasswordFiles stats the neighbours' password files (each once); one that
// cannot be read is left out (config validation reports it).
func PasswordFiles(c *config.Config) []PasswordFile {
	var out []PasswordFile
	seen := map[string]bool{}
	for _, n := range c.Neighbors {
		if n.PasswordFile == "" || seen[n.PasswordFile] {
			continue
		}
		seen[n.PasswordFile] = true
		if st, err := os.Stat(n.PasswordFile); err == nil {
			out = append(out, PasswordFile{Path: n.PasswordFile, Mode: st.Mode()})
		}
	}
	return out
}

// InterfaceAddrs maps every interface of this network namespace to its
// addresses.
func InterfaceAddrs() (map[string][]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := map[string][]netip.Prefix{}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		out[ifc.Name] = []netip.Prefix{}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && ones > 32 {
				ones -= 96
			}
			out[ifc.Name] = append(out[ifc.Name], netip.PrefixFrom(ip, ones))
		}
	}
	return out, nil
}
