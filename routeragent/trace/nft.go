package trace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

// BackendNftables names native nftables in a RuleRef (the value of
// firewall.backend that selects it).
const BackendNftables = "nftables"

// NftTablePrefix starts the name of trace's own native nftables table,
// followed by the owning trace's pid: inet bgplb_trace_<pid>.
//
// The kernel could delete such a table itself when the netlink socket
// that made it closes (NFT_TABLE_F_OWNER, Linux 5.12), which would make a
// SIGKILLed trace leave nothing; google/nftables v0.3.0 always sends table
// flags 0 (Conn.AddTable), so the table is marked by name instead and swept
// like the iptables rules: by the next trace (Sweep) once its pid is gone.
const NftTablePrefix = "bgplb_trace_"

// nftCountChain is the chain of trace's table: a forward base chain at
// priority mangle (-150), before any filter chain (priority 0 and up), so
// that it counts every forwarded packet before a drop or accept. Its rules
// end in a counter and have no verdict: they change nothing.
const nftCountChain = "count"

// Nft is Firewall over native nftables: the INVALID drops of the forward
// base chains (firewall.AnalyzeNft) and our bgplb_exempt chains with their
// counters, read through the firewall package's NftConn; the counting
// rules in a table of trace's own.
type Nft struct {
	// Open opens the netlink reader (firewall.NetlinkNft).
	Open firewall.NftConnFactory
	// PID names the counting table (os.Getpid()).
	PID int

	conn      firewall.NftConn
	installed bool
}

func (p *Nft) table() string { return NftTablePrefix + strconv.Itoa(p.PID) }

func (p *Nft) reader() (firewall.NftConn, error) {
	if p.conn == nil {
		c, err := p.Open()
		if err != nil {
			return nil, err
		}
		p.conn = c
	}
	return p.conn, nil
}

// Ruleset lists the native ruleset.
func (p *Nft) Ruleset() (firewall.NftRuleset, error) {
	c, err := p.reader()
	if err != nil {
		return firewall.NftRuleset{}, err
	}
	return c.List()
}

// Install creates trace's table with the two counting rules for scope
// (all packets, INVALID packets), after removing the tables of killed
// traces.
func (p *Nft) Install(ctx context.Context, scope Scope) error {
	if _, err := p.Sweep(ctx, alive); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables netlink: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: p.table()})
	ch := c.AddChain(&nftables.Chain{Name: nftCountChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle})
	mark := fmt.Sprintf("%s pid=%d", Mark, p.PID)
	for _, kind := range []string{"invalid", "all"} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: countingExprs(scope, kind == "invalid"),
			UserData: userdata.AppendString(nil, userdata.TypeComment, mark+" "+kind)})
	}
	// Set before the flush: a half-made table is removed too.
	p.installed = true
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create nftables table inet %s: %w", p.table(), err)
	}
	return nil
}

// countingExprs matches scope in an inet table: family, destination
// address, TCP, destination port, source address, ct state invalid (when
// invalid), then a counter. The ct expression also makes conntrack track
// the namespace's flows (its hooks register on demand).
func countingExprs(s Scope, invalid bool) []expr.Any {
	addr := s.Service.Addr()
	proto, dst, src := byte(unix.NFPROTO_IPV4), uint32(16), uint32(12)
	if addr.Is6() {
		proto, dst, src = unix.NFPROTO_IPV6, 24, 8
	}
	eq := func(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	x := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq([]byte{proto}),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dst, Len: uint32(addr.BitLen() / 8)}, eq(addr.AsSlice()),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, eq([]byte{unix.IPPROTO_TCP}),
	}
	if port := s.Service.Port(); port != 0 {
		x = append(x, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			eq(binary.BigEndian.AppendUint16(nil, port)))
	}
	if s.Client.IsValid() {
		x = append(x, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: src, Len: uint32(s.Client.BitLen() / 8)},
			eq(s.Client.AsSlice()))
	}
	if invalid {
		x = append(x, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitINVALID), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)})
	}
	return append(x, &expr.Counter{})
}

// Remove deletes trace's table and closes the reader.
func (p *Nft) Remove(context.Context) error {
	var errs []error
	if p.installed {
		p.installed = false
		if err := delTables(p.table()); err != nil {
			errs = append(errs, err)
		}
	}
	if cl, ok := p.conn.(io.Closer); ok {
		errs = append(errs, cl.Close())
	}
	p.conn = nil
	return errors.Join(errs...)
}

// delTables deletes inet tables by name in one transaction.
func delTables(names ...string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables netlink: %w", err)
	}
	for _, n := range names {
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: n})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables tables %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// Sweep deletes the tables of traces that no longer run and returns how
// many it deleted.
func (p *Nft) Sweep(_ context.Context, alive func(pid int) bool) (int, error) {
	rs, err := p.Ruleset()
	if err != nil {
		return 0, err
	}
	dead := leftoverTables(rs, alive)
	if len(dead) == 0 {
		return 0, nil
	}
	return len(dead), delTables(dead...)
}

// leftoverTables names the inet tables of traces whose pid is gone.
func leftoverTables(rs firewall.NftRuleset, alive func(pid int) bool) []string {
	var out []string
	for _, t := range rs.Tables {
		rest, ok := strings.CutPrefix(t.Name, NftTablePrefix)
		if t.Family != nftables.TableFamilyINet || !ok {
			continue
		}
		if pid, err := strconv.Atoi(rest); err == nil && pid > 0 && !alive(pid) {
			out = append(out, t.Name)
		}
	}
	return out
}

// Read returns the counting rules' counters, the native INVALID drops and
// our exemptions.
func (p *Nft) Read(context.Context) (Counters, error) {
	rs, err := p.Ruleset()
	if err != nil {
		return Counters{}, err
	}
	return nftCounters(rs, p.table(), fmt.Sprintf("%s pid=%d", Mark, p.PID)), nil
}

// nftCounters reads a listing: our counting table's counters, every
// forward base chain's INVALID drop (firewall.AnalyzeNft) with its
// counter, and the rules of every bgplb_exempt chain.
func nftCounters(rs firewall.NftRuleset, table, mark string) Counters {
	var c Counters
	for i := range rs.Tables {
		t := &rs.Tables[i]
		if t.Family == nftables.TableFamilyINet && t.Name == table {
			for _, r := range chainRules(t, nftCountChain) {
				switch n, _ := ruleCounter(r); r.Comment() {
				case mark + " all":
					c.Packets += n
				case mark + " invalid":
					c.Invalid += n
				}
			}
		}
		for j, r := range chainRules(t, firewall.NftChainName) {
			n, _ := ruleCounter(r)
			c.Exemptions = append(c.Exemptions, RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: t.String(),
				Chain: firewall.NftChainName, Number: j + 1, Handle: r.Handle, Spec: nftSpec(t.String(), firewall.NftChainName, r)}, Packets: n})
		}
	}
	for _, d := range firewall.AnalyzeNft(rs).Drops {
		t := nftTable(rs, d.Table)
		rules := chainRules(t, d.Chain)
		i := slices.IndexFunc(rules, func(r firewall.NftRule) bool { return r.Handle == d.Handle })
		if i < 0 {
			continue
		}
		n, counted := ruleCounter(rules[i])
		c.Drops = append(c.Drops, RuleCount{RuleRef: RuleRef{Backend: BackendNftables, Table: d.Table, Chain: d.Chain,
			Number: i + 1, Handle: d.Handle, Spec: nftSpec(d.Table, d.Chain, rules[i])}, Packets: n, Uncounted: !counted})
	}
	return c
}

func nftTable(rs firewall.NftRuleset, name string) *firewall.NftTable {
	for i := range rs.Tables {
		if rs.Tables[i].String() == name {
			return &rs.Tables[i]
		}
	}
	return nil
}

func chainRules(t *firewall.NftTable, chain string) []firewall.NftRule {
	if t == nil {
		return nil
	}
	if c := t.Chain(chain); c != nil {
		return c.Rules
	}
	return nil
}

// ruleCounter is the packets of the rule's counter expression; counted is
// false when the rule has none (nft rules count only with `counter`).
func ruleCounter(r firewall.NftRule) (packets uint64, counted bool) {
	for _, x := range r.Exprs {
		if ctr, ok := x.(*expr.Counter); ok {
			return ctr.Packets, true
		}
	}
	return 0, false
}

// nftSpec names a native rule as `nft -a list` locates it; its comment
// when it has one.
func nftSpec(table, chain string, r firewall.NftRule) string {
	s := fmt.Sprintf("%s chain %s handle %d", table, chain, r.Handle)
	if c := r.Comment(); c != "" {
		s += " comment " + strconv.Quote(c)
	}
	return s
}

// SweepNftLeftovers deletes the native tables of every trace that no
// longer runs, as SweepLeftovers does for the iptables rules; for the
// agent's start (open: firewall.NetlinkNft).
func SweepNftLeftovers(ctx context.Context, open firewall.NftConnFactory) (int, error) {
	p := &Nft{Open: open}
	defer func() { _ = p.Remove(ctx) }() // closes the reader; p installed nothing
	return p.Sweep(ctx, alive)
}
