package doctor

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
)

// Rule shapes as nft 1.0 compiles them (nft --debug=netlink).
func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func ctState(mask uint32, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: u32(mask), Xor: u32(0)},
		&expr.Cmp{Op: op, Register: 1, Data: u32(0)},
	}
}

func nftRule(parts ...any) firewall.NftRule {
	var r firewall.NftRule
	for _, p := range parts {
		switch x := p.(type) {
		case []expr.Any:
			r.Exprs = append(r.Exprs, x...)
		case expr.Any:
			r.Exprs = append(r.Exprs, x)
		}
	}
	return r
}

var (
	invalidDrop   = nftRule(ctState(expr.CtStateBitINVALID, expr.CmpOpNeq), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
	invalidReject = nftRule(ctState(expr.CtStateBitINVALID, expr.CmpOpNeq), &expr.Reject{})
	notInvalidAcc = nftRule(ctState(expr.CtStateBitINVALID, expr.CmpOpEq), &expr.Verdict{Kind: expr.VerdictAccept})
	establishedOK = nftRule(ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED, expr.CmpOpNeq), &expr.Verdict{Kind: expr.VerdictAccept})
	vmapRule      = nftRule(&expr.Ct{Key: expr.CtKeySTATE, Register: 1}, &expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetName: "__map0"})
	jumpSub       = nftRule(&expr.Verdict{Kind: expr.VerdictJump, Chain: "sub"})
	invalidJump   = nftRule(ctState(expr.CtStateBitINVALID, expr.CmpOpNeq), &expr.Verdict{Kind: expr.VerdictJump, Chain: "sub"})
	plainDrop     = nftRule(&expr.Verdict{Kind: expr.VerdictDrop})
	stateVmap     = map[string][]firewall.NftMapElem{"__map0": {
		{Key: u32(expr.CtStateBitESTABLISHED), Verdict: expr.Verdict{Kind: expr.VerdictAccept}},
		{Key: u32(expr.CtStateBitINVALID), Verdict: expr.Verdict{Kind: expr.VerdictDrop}},
	}}
)

// fuzzRuleset builds a ruleset from bytes: tables of the families nft
// knows (iptables-nft's own among them), base chains at any hook, regular
// chains, and rules from the shapes above.
func fuzzRuleset(data []byte) firewall.NftRuleset {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	fams := []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyNetdev, nftables.TableFamilyBridge}
	tnames := []string{"filter", "fw", "mangle", firewall.FirewalldTable}
	cnames := []string{"forward", "FORWARD", "sub", "input", "INPUT"}
	hooks := []*nftables.ChainHook{nil, nftables.ChainHookForward, nftables.ChainHookInput, nftables.ChainHookPrerouting}
	shapes := []firewall.NftRule{invalidDrop, invalidReject, notInvalidAcc, establishedOK, vmapRule, jumpSub, invalidJump, plainDrop}
	var rs firewall.NftRuleset
	for len(data) > 0 && len(rs.Tables) < 4 {
		t := firewall.NftTable{Family: fams[int(next())%len(fams)], Name: tnames[int(next())%len(tnames)], VerdictMaps: stateVmap}
		for n := int(next() % 4); n > 0; n-- {
			c := firewall.NftChain{Name: cnames[int(next())%len(cnames)], Hook: hooks[int(next())%len(hooks)]}
			if t.Chain(c.Name) != nil {
				continue
			}
			for m := int(next() % 4); m > 0; m-- {
				c.Rules = append(c.Rules, shapes[int(next())%len(shapes)])
			}
			t.Chains = append(t.Chains, c)
		}
		rs.Tables = append(rs.Tables, t)
	}
	return rs
}

// FuzzCheckNftables: any native ruleset never panics the nftables check;
// with firewall.backend legacy every finding is an nftables warning about a
// native table (never iptables-nft's `ip filter`/`ip6 filter`) carrying one
// `nft insert rule` per interface × subnet; an INVALID drop added to
// iptables-nft's table changes nothing, one in a new native forward chain
// adds exactly one finding naming it.
//
// Seeds: testdata/fuzz/FuzzCheckNftables.
func FuzzCheckNftables(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 1, 1, 0})             // inet filter forward: ct state invalid drop
	f.Add([]byte{1, 0, 1, 1, 1, 1, 0})             // ip filter FORWARD (iptables-nft's)
	f.Add([]byte{0, 1, 2, 0, 1, 1, 5, 2, 0, 1, 0}) // inet fw forward: jump sub; sub drops invalid
	f.Add([]byte{0, 3, 1, 0, 1, 1, 0})             // firewalld
	ifaces := []string{"lan0", "eth0.2"}
	subnets := []netip.Prefix{netip.MustParsePrefix("192.168.254.0/24"), netip.MustParsePrefix("2001:db8:254::/64")}
	scan := func(rs firewall.NftRuleset) []Finding {
		return checkNftables(Input{Nft: &rs, LANInterfaces: ifaces, ServiceSubnets: subnets, FirewallMode: config.FirewallExempt, FirewallBackend: config.BackendLegacy})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rs := fuzzRuleset(data)
		got := scan(rs)
		var drops []Finding
		for _, fd := range got {
			if fd.Check != "nftables" {
				t.Fatalf("finding %+v is not an nftables one", fd)
			}
			if strings.HasPrefix(fd.Message, `native nftables table "ip filter" chain "FORWARD"`) || strings.HasPrefix(fd.Message, `native nftables table "ip6 filter" chain "FORWARD"`) {
				t.Fatalf("finding about iptables-nft's own table: %s", fd.Message)
			}
			if strings.Contains(fd.Message, "drops INVALID packets") {
				drops = append(drops, fd)
				if fd.Status != Warn {
					t.Fatalf("finding %+v is not a warning", fd)
				}
				if n := strings.Count(fd.Fix, "nft insert rule "); n != len(ifaces)*len(subnets) {
					t.Fatalf("fix has %d nft commands, want %d: %s", n, len(ifaces)*len(subnets), fd.Fix)
				}
			}
		}

		ipf := rs
		ipf.Tables = append(append([]firewall.NftTable{}, rs.Tables...), firewall.NftTable{Family: nftables.TableFamilyIPv4, Name: "filter",
			Chains: []firewall.NftChain{{Name: "FORWARD", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidDrop}}}})
		if slices := ipf.Tables[:len(rs.Tables)]; !hasTable(slices, "ip filter") {
			if d := cmp.Diff(got, scan(ipf)); d != "" {
				t.Fatalf("an INVALID drop in iptables-nft's table changed the findings (-before +after):\n%s", d)
			}
		}
		native := rs
		native.Tables = append(append([]firewall.NftTable{}, rs.Tables...), firewall.NftTable{Family: nftables.TableFamilyINet, Name: "fuzz",
			Chains: []firewall.NftChain{{Name: "fwd", Hook: nftables.ChainHookForward, Rules: []firewall.NftRule{invalidDrop}}}})
		if hasTable(rs.Tables, "inet fuzz") {
			return
		}
		after := scan(native)
		var afterDrops []Finding
		for _, fd := range after {
			if strings.Contains(fd.Message, "drops INVALID packets") {
				afterDrops = append(afterDrops, fd)
			}
		}
		if len(afterDrops) != len(drops)+1 || !strings.HasPrefix(afterDrops[len(afterDrops)-1].Message, `native nftables table "inet fuzz" chain "fwd" drops INVALID packets`) {
			t.Fatalf("an INVALID drop in a native table: %d drop findings before, after %+v", len(drops), after)
		}
	})
}

func hasTable(ts []firewall.NftTable, name string) bool {
	for _, t := range ts {
		if t.String() == name {
			return true
		}
	}
	return false
}
