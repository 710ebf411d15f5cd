package agent

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/firewall"
	"github.com/bgplb/bgplb/routeragent/symmetry"
)

type fakeConntrack struct {
	flows []symmetry.Flow
	err   error
}

func (f *fakeConntrack) Flows([]netip.Prefix) ([]symmetry.Flow, error) { return f.flows, f.err }

// TestSymmetryStatus: in verify mode the status gets a symmetry section
// naming the node of a one-way flow (from the installed route), and the
// metrics its counts and the INVALID counter; in another mode the section
// goes.
func TestSymmetryStatus(t *testing.T) {
	svc := netip.MustParsePrefix("192.168.254.1/32")
	rt := &fakeRoutes{installed: map[netip.Prefix][]netip.Addr{svc: {netip.MustParseAddr("192.168.2.20")}}}
	a := testAgent(t, &fakeSpeaker{}, rt)
	ct := &fakeConntrack{flows: []symmetry.Flow{{Protocol: 6, Client: netip.MustParseAddrPort("192.168.2.109:40000"),
		Service: netip.MustParseAddrPort("192.168.254.1:3142")}}}
	a.deps.Conntrack = ct
	verify := *a.cfg
	verify.Firewall.Mode = config.FirewallVerify
	a.cfg = &verify
	a.status.Firewall = &firewall.Status{Mode: config.FirewallVerify,
		Invalid: []firewall.InvalidCount{{Subnet: "192.168.254.0/24", Direction: "to", Packets: 4}}}

	t0 := time.Now()
	tr := a.observeSymmetry(nil, t0)
	tr = a.observeSymmetry(tr, t0.Add(symmetry.DefaultGrace+time.Second))
	st := a.Snapshot().Symmetry
	if st == nil || st.Verdict != symmetry.Asymmetric || len(st.Offenders) != 1 ||
		len(st.Offenders[0].Nodes) != 1 || st.Offenders[0].Nodes[0] != "192.168.2.20" || st.InvalidPackets != 4 {
		t.Fatalf("symmetry status %+v", st)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a: a})
	for name, want := range map[string]float64{
		"bgplb_routeragent_symmetry_flows":                1, // asymmetric=1, the others 0
		"bgplb_routeragent_service_invalid_packets_total": 4,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		if sum != want {
			t.Errorf("%s sums to %v, want %v", name, sum, want)
		}
	}

	// A failed dump keeps the last look and says why.
	ct.err = errors.New("ctnetlink: permission denied")
	tr = a.observeSymmetry(tr, t0.Add(10*time.Second))
	if st := a.Snapshot().Symmetry; st.LastError == "" || st.Verdict != symmetry.Asymmetric {
		t.Errorf("after a failed dump: %+v", st)
	}

	// Another mode: no symmetry section.
	a.cfg = testAgent(t, &fakeSpeaker{}, rt).cfg
	if tr = a.observeSymmetry(tr, t0.Add(12*time.Second)); tr != nil || a.Snapshot().Symmetry != nil {
		t.Errorf("exempt mode kept the symmetry section")
	}
}

// TestReloadExemptToVerify: a reload from exempt to verify builds the
// verify firewall, whose first pass removes the exemptions the exempt one
// installed and installs the counting table instead.
func TestReloadExemptToVerify(t *testing.T) {
	legacy := firewall.NewFake()
	legacy.SetPolicy("FORWARD", "DROP")
	legacy.AddRule("FORWARD", "-m", "state", "--state", "INVALID", "-j", "DROP")
	nft := firewall.NewNftFake(firewall.NftRuleset{})
	opts := []firewall.Option{
		firewall.WithRunners(func(b firewall.Backend, f firewall.Family) (firewall.Runner, error) {
			if b == firewall.Legacy && f == firewall.IPv4 {
				return legacy, nil
			}
			return nil, firewall.ErrUnavailable
		}),
		firewall.WithNftables(func() (firewall.NftConn, error) { return nft, nil }),
	}
	newFW := func(c *config.Config) (Firewall, error) {
		return firewall.New(firewall.Config{Mode: c.Firewall.Mode, Interfaces: c.LANInterfaces, Subnets: c.ServicePrefixes()}, nil, opts...)
	}
	hasChain := func() bool {
		for _, l := range legacy.Lines() {
			if l == "-N "+firewall.ChainName {
				return true
			}
		}
		return false
	}

	a := testAgent(t, &fakeSpeaker{}, &fakeRoutes{})
	fw, err := newFW(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.fw, a.deps.NewFirewall = fw, newFW
	a.ensureFirewall(t.Context())
	if !hasChain() {
		t.Fatalf("exempt mode: no chain in %v", legacy.Lines())
	}

	verify := *a.cfg
	verify.Firewall.Mode = config.FirewallVerify
	if err := a.applyReload(t.Context(), &verify); err != nil {
		t.Fatal(err)
	}
	a.ensureFirewall(t.Context())
	if hasChain() {
		t.Errorf("verify mode kept the exemptions: %v", legacy.Lines())
	}
	st := a.Snapshot().Firewall
	if st == nil || st.Mode != config.FirewallVerify || len(st.Invalid) != 2 || st.LastError != "" {
		t.Errorf("firewall status after the reload: %+v", st)
	}
}

// TestReloadToNoFirewall: a reload whose NewFirewall builds none drops the
// last firewall's status section (status then says only the mode).
func TestReloadToNoFirewall(t *testing.T) {
	a := testAgent(t, &fakeSpeaker{}, &fakeRoutes{})
	a.status.Firewall = &firewall.Status{Mode: config.FirewallExempt}
	a.deps.NewFirewall = func(*config.Config) (Firewall, error) { return nil, nil }
	off := *a.cfg
	off.Firewall.Mode = config.FirewallOff
	if err := a.applyReload(t.Context(), &off); err != nil {
		t.Fatal(err)
	}
	if st := a.Snapshot().Firewall; st != nil {
		t.Errorf("stale firewall status after the reload: %+v", st)
	}
}
