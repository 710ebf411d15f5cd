package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bgplb/bgplb/internal/buildinfo"
	"github.com/bgplb/bgplb/routeragent/config"
	"github.com/bgplb/bgplb/routeragent/tcpstat"
)

// StatusSocketMode is the status socket's mode: the agent's group (the
// package's bgplb, the unit's Group=) may read status and poke.
const StatusSocketMode fs.FileMode = 0o660

// ListenStatus creates the status socket at path with StatusSocketMode,
// owned by the agent's user and group. A socket it cannot make so is an
// error (the agent refuses to start), never a silently wrong mode.
func ListenStatus(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("status socket dir: %w", err)
	}
	// A socket left by a killed agent blocks bind; remove only a socket.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("status socket %s: remove the stale socket: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// bind() applies the umask (the unit's UMask=0077 gives 0700): set the
	// mode explicitly, and check it took.
	err = os.Chmod(path, StatusSocketMode)
	if err == nil {
		err = checkSocketMode(path)
	}
	if err != nil {
		l.Close() // removes the socket file
		return nil, fmt.Errorf("status socket %s: set mode %#o for the group that reads status: %w", path, StatusSocketMode, err)
	}
	return l, nil
}

func checkSocketMode(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != StatusSocketMode {
		return fmt.Errorf("mode is %#o", fi.Mode().Perm())
	}
	return nil
}

// ServeStatus serves GET /status (JSON) and POST /poke on l (ListenStatus)
// until ctx ends, then removes the socket.
func (a *Agent) ServeStatus(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Snapshot())
	})
	mux.HandleFunc("POST /poke", func(w http.ResponseWriter, r *http.Request) {
		a.Kick()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /trace", a.recordTrace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		// Closing a unix listener removes its socket file.
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status socket: %w", err)
	}
	return nil
}

func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}, Timeout: 10 * time.Second}
}

// Poke asks the agent listening on path to check its firewall rules and
// routes now.
func Poke(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/poke", nil)
	if err != nil {
		return err
	}
	resp, err := unixClient(path).Do(req)
	if err != nil {
		return dialError(path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("poke: %s", resp.Status)
	}
	return nil
}

// dialError explains why the socket at path did not answer: no access (the
// socket's group, or the folder's, is not ours) or no agent.
func dialError(path string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("permission denied: run as root or join group %s (%s): %w", socketGroup(path), path, err)
	}
	return fmt.Errorf("is the agent running? %w", err)
}

// socketGroup names the group that may use the socket at path: the
// socket's, or that of the nearest folder the caller may not enter (the
// socket then cannot even be looked at); "bgplb", the package's, when
// neither can be read.
func socketGroup(path string) string {
	for p := path; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				return groupName(st.Gid)
			}
		}
		if p == filepath.Dir(p) {
			return "bgplb"
		}
	}
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
}

// FetchStatus reads the status of a running agent from its socket.
func FetchStatus(ctx context.Context, path string) (Status, []byte, error) {
	c := unixClient(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/status", nil)
	if err != nil {
		return Status{}, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, nil, dialError(path, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return Status{}, nil, fmt.Errorf("decode status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(raw, &s); err != nil {
		return Status{}, nil, fmt.Errorf("decode status: %w", err)
	}
	return s, raw, nil
}

// collector derives every metric from the status snapshot at scrape time,
// so metrics and `status` never disagree.
//
// Label bounds (what limits the number of series), all set by the
// configuration rather than by what the LAN sends: peer is a speaker's
// address admitted by a neighbors entry (see metricPeers), reason is one of
// the policy's fixed reasons, state one of the six BGP FSM states, width a
// number of next hops (at most the number of peers), interface a configured
// LAN interface, subnet a configured service subnet, protocol and backend
// the firewall's fixed sets.
type collector struct{ a *Agent }

var (
	mPeers         = prometheus.NewDesc("bgplb_routeragent_peers", "BGP peers seen, by session state.", []string{"state"}, nil)
	mPeersUp       = prometheus.NewDesc("bgplb_routeragent_peers_up", "BGP peers with an established session.", nil, nil)
	mPeerUp        = prometheus.NewDesc("bgplb_routeragent_peer_up", "1 when the BGP session with the peer is established, else 0 (peers of address: entries always; of prefix: entries while established).", []string{"peer"}, nil)
	mAccepted      = prometheus.NewDesc("bgplb_routeragent_prefixes_accepted", "Paths accepted by the import policy, per peer.", []string{"peer"}, nil)
	mRejected      = prometheus.NewDesc("bgplb_routeragent_prefixes_rejected", "Paths rejected by the import policy, per peer and reason.", []string{"peer", "reason"}, nil)
	mDesired       = prometheus.NewDesc("bgplb_routeragent_routes_desired", "Routes the agent wants in the kernel.", nil, nil)
	mInstalled     = prometheus.NewDesc("bgplb_routeragent_routes_installed", "Routes of ours in the kernel.", nil, nil)
	mECMP          = prometheus.NewDesc("bgplb_routeragent_routes_ecmp_width", "Installed routes by number of next hops.", []string{"width"}, nil)
	mECMPPaths     = prometheus.NewDesc("bgplb_routeragent_ecmp_paths", "Next hops over all installed routes.", nil, nil)
	mConflicts     = prometheus.NewDesc("bgplb_routeragent_route_conflicts", "Desired prefixes held by a route that is not ours.", nil, nil)
	mRouteErrors   = prometheus.NewDesc("bgplb_routeragent_route_errors", "Desired prefixes that failed to program in the last pass.", nil, nil)
	mStale         = prometheus.NewDesc("bgplb_routeragent_routes_stale_kept", "Next hops kept from the previous run awaiting End-of-RIB.", nil, nil)
	mDraining      = prometheus.NewDesc("bgplb_routeragent_routes_draining_next_hops", "Next hops carrying GRACEFUL_SHUTDOWN (RFC 8326), left out of their route while another remains.", nil, nil)
	mRepairs       = prometheus.NewDesc("bgplb_routeragent_firewall_repairs_total", "Firewall drift repairs since start.", nil, nil)
	mFirewallOK    = prometheus.NewDesc("bgplb_routeragent_firewall_ok", "1 when the last firewall pass succeeded.", nil, nil)
	mExemptPackets = prometheus.NewDesc("bgplb_routeragent_exemption_packets_total", "Packets accepted by our INVALID exemptions.", []string{"interface", "subnet", "protocol", "backend"}, nil)
	mTeardowns     = prometheus.NewDesc("bgplb_routeragent_max_prefix_teardowns_total", "Sessions closed because the peer went over maxPrefixes, per peer.", []string{"peer"}, nil)
	mUndecodable   = prometheus.NewDesc("bgplb_routeragent_bgp_undecodable_paths_total", "Paths GoBGP delivered that the agent could not decode, since start (neither accepted nor rejected).", nil, nil)
	mSymFlows      = prometheus.NewDesc("bgplb_routeragent_symmetry_flows", "Firewall mode verify: service flows in conntrack by state (assured: seen both ways; replied: reply seen, not yet assured; unreplied: no reply yet, within the grace period; asymmetric: no reply after it).", []string{"state"}, nil)
	mSvcInvalid    = prometheus.NewDesc("bgplb_routeragent_service_invalid_packets_total", "Firewall mode verify: forwarded conntrack-INVALID packets to or from the service subnets (the firewall drops them), counted by table inet bgplb_verify.", nil, nil)
	mRedirects     = prometheus.NewDesc("bgplb_routeragent_send_redirects_effective", "Effective send_redirects per LAN interface (want 0).", []string{"interface"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

// appliedConfig is the configuration of the last pass (nil before the first).
func (a *Agent) appliedConfig() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last.cfg
}

// metricPeers chooses the peers that get per-peer series. The status keeps
// every peer seen since start, with its last state; metrics must not: a
// series per address that ever connected would grow without bound and show
// sessions that no longer exist. A peer of an address: entry is exported
// while the entry is configured, up or down (its peer_up going to 0 is what
// the session-down alert watches). A peer of a prefix: entry (dynamic
// neighbours: GoBGP deletes the session when it drops) is exported while
// established, so its series go with it; the speakers' own
// bgplb_speaker_session_up shows those sessions from the other side. A peer
// no longer admitted by any entry is not exported.
func metricPeers(cfg *config.Config, peers []PeerStatus) []PeerStatus {
	if cfg == nil {
		return nil
	}
	var out []PeerStatus
	for _, p := range peers {
		n, ok := cfg.NeighborFor(p.Address)
		if !ok {
			continue
		}
		if n.NeighborPrefix().IsSingleIP() || p.Up {
			out = append(out, p)
		}
	}
	return out
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Snapshot()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	states := map[string]int{}
	up := 0
	for _, p := range metricPeers(c.a.appliedConfig(), s.Peers) {
		states[p.State]++
		peerUp := 0.0
		if p.Up {
			up++
			peerUp = 1
		}
		g(mPeerUp, peerUp, p.Address.String())
		g(mAccepted, float64(p.Accepted), p.Address.String())
		for r, n := range p.Rejected {
			g(mRejected, float64(n), p.Address.String(), string(r))
		}
		if p.MaxPrefixTeardowns > 0 {
			ch <- prometheus.MustNewConstMetric(mTeardowns, prometheus.CounterValue, float64(p.MaxPrefixTeardowns), p.Address.String())
		}
	}
	for st, n := range states {
		g(mPeers, float64(n), st)
	}
	g(mPeersUp, float64(up))
	g(mDesired, float64(s.Routes.Desired))
	g(mInstalled, float64(s.Routes.Installed))
	paths := 0
	for w, n := range s.Routes.ECMPWidth {
		g(mECMP, float64(n), strconv.Itoa(w))
		paths += w * n
	}
	g(mECMPPaths, float64(paths))
	g(mConflicts, float64(len(s.Routes.Conflicts)))
	g(mRouteErrors, float64(len(s.Routes.Errors)))
	g(mStale, float64(s.Routes.Stale))
	g(mDraining, float64(s.Routes.Draining))
	ch <- prometheus.MustNewConstMetric(mUndecodable, prometheus.CounterValue, float64(s.Prefix.Undecodable))
	if f := s.Firewall; f != nil {
		ch <- prometheus.MustNewConstMetric(mRepairs, prometheus.CounterValue, float64(f.Repairs))
		ok := 1.0
		if f.LastError != "" {
			ok = 0
		}
		g(mFirewallOK, ok)
		for _, r := range f.Rules {
			ch <- prometheus.MustNewConstMetric(mExemptPackets, prometheus.CounterValue, float64(r.Packets), r.Interface, r.Subnet, r.Protocol, r.Where())
		}
	}
	if f := s.Firewall; f != nil && f.Mode == config.FirewallVerify && f.Invalid != nil {
		ch <- prometheus.MustNewConstMetric(mSvcInvalid, prometheus.CounterValue, float64(f.InvalidTotal()))
	}
	if y := s.Symmetry; y != nil {
		g(mSymFlows, float64(y.Assured), "assured")
		g(mSymFlows, float64(y.Replied), "replied")
		g(mSymFlows, float64(y.Unreplied), "unreplied")
		g(mSymFlows, float64(y.Asymmetric), "asymmetric")
	}
	collectTraces(ch, s.Trace)
	collectBFD(ch, s.BFD)
	collectPins(ch, s.Pins)
	if s.Sysctl != nil {
		for name, i := range s.Sysctl.Interfaces {
			g(mRedirects, float64(i.Effective), name)
		}
	}
}

// NewMetricsRegistry returns the registry /metrics serves: the agent's
// collector, bgplb_build_info, and the Go runtime and process collectors.
func (a *Agent) NewMetricsRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collector{a: a}, tcpstat.NewCollector(tcpstat.Read),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	if err := buildinfo.Register(reg, "bgplb-routeragent"); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return reg, nil
}

// ServeMetrics serves /metrics on addr until ctx ends.
func (a *Agent) ServeMetrics(ctx context.Context, addr string) error {
	reg, err := a.NewMetricsRegistry()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
