package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// The floor of make bench-routers (issue 20): GoBGP v3 alone, configured
// as the agent configures it for the harness's speakers (dynamic neighbours
// from the LAN, GTSM, graceful restart helper, the post-policy watch the
// agent reads), with nothing behind its watch but a count. It installs no
// route; it prints when its watch has handed over every path, which is the
// earliest moment any router built on GoBGP v3's API could begin to program
// the last of them. It exports nothing (an export policy that rejects
// everything, as the agent's). With floorAgentConfEnv it also has what the
// agent adds for its verdicts: ADD-PATH send of one path to peers that
// can receive it.

const (
	floorRoutesEnv    = "BGPLB_FLOOR_ROUTES"     // prefixes to wait for
	floorWidthEnv     = "BGPLB_FLOOR_WIDTH"      // paths (next hops) each
	floorProbeEnv     = "BGPLB_FLOOR_PROBE"      // one more prefix to report on its own
	floorAgentConfEnv = "BGPLB_FLOOR_AGENT_CONF" // non-empty: the agent's verdict settings too
	// floorNoWatchEnv: no watch at all; the floor looks up the prefixes
	// a quarter into the range and its last one in GoBGP's RIB every 2 ms
	// (the speakers announce the range in order, one session each, so
	// the last prefix with every path means all of them).
	floorNoWatchEnv = "BGPLB_FLOOR_NO_WATCH"
	floorFirstEnv   = "BGPLB_FLOOR_FIRST" // the range's first address
	// floorBestEnv: GoBGP's cheapest change feed instead of the agent's:
	// the best-path watch with multipath on (the paths of a prefix that
	// are equal to its best: all of them when the speakers send the same
	// attributes, as here). It carries no path GoBGP's best-path selection
	// left out, so the agent cannot use it for its own decisions.
	floorBestEnv = "BGPLB_FLOOR_BEST"
)

// gobgpFloorRole runs the floor in the current namespace. It prints "up"
// once listening, "complete UNIXNANO" once every prefix has its paths and
// "probe UNIXNANO" when the probe's path arrives ("quarter UNIXNANO" when a
// quarter of the prefixes have theirs: the harness then sends the probe).
func gobgpFloorRole() int {
	routes, _ := strconv.Atoi(os.Getenv(floorRoutesEnv))
	width, _ := strconv.Atoi(os.Getenv(floorWidthEnv))
	probe := os.Getenv(floorProbeEnv)
	agentConf := os.Getenv(floorAgentConfEnv) != ""
	ctx := context.Background()
	srv := server.NewBgpServer()
	go srv.Serve()
	defer srv.Stop()
	best := os.Getenv(floorBestEnv) != ""
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: "192.168.2.1", ListenPort: 179, UseMultiplePaths: best}}); err != nil {
		fmt.Println("err:", err)
		return 1
	}
	// Export nothing, as the agent: a path from one speaker must never
	// reach another.
	if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_EXPORT, DefaultAction: api.RouteAction_REJECT,
	}}); err != nil {
		fmt.Println("err:", err)
		return 1
	}
	var (
		mu       sync.Mutex
		paths    = map[string]int{} // prefix -> paths
		complete int
		out      = bufio.NewWriter(os.Stdout)
	)
	say := func(what string) {
		fmt.Fprintf(out, "%s %d\n", what, time.Now().UnixNano())
		out.Flush()
	}
	var err error
	if os.Getenv(floorNoWatchEnv) != "" {
		go pollFloor(ctx, srv, routes, width, probe, func(what string) {
			mu.Lock()
			defer mu.Unlock()
			say(what)
		})
	} else if best {
		err = watchBestFloor(ctx, srv, func(prefix string, n int) {
			mu.Lock()
			defer mu.Unlock()
			if prefix == probe {
				say("probe")
				return
			}
			if n >= width && paths[prefix] < width {
				paths[prefix] = n
				complete++
				if complete == routes/4 {
					say("quarter")
				}
				if complete == routes {
					say("complete")
				}
			}
		})
	} else {
		err = watchFloor(ctx, srv, func(prefix string) {
			mu.Lock()
			defer mu.Unlock()
			if prefix == probe {
				say("probe")
				return
			}
			paths[prefix]++
			if paths[prefix] == width {
				complete++
				if complete == routes/4 {
					say("quarter")
				}
				if complete == routes {
					say("complete")
				}
			}
		})
	}
	if err != nil {
		fmt.Println("err:", err)
		return 1
	}
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	afi := &api.AfiSafi{
		Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
		MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
	}
	if agentConf {
		afi.AddPaths = &api.AddPaths{Config: &api.AddPathsConfig{SendMax: 1}}
	}
	if err := srv.AddPeerGroup(ctx, &api.AddPeerGroupRequest{PeerGroup: &api.PeerGroup{
		Conf:            &api.PeerGroupConf{PeerGroupName: "speakers", PeerAsn: 64512},
		Timers:          &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3, ConnectRetry: 5}},
		GracefulRestart: &api.GracefulRestart{Enabled: true, HelperOnly: true, RestartTime: 120},
		Transport:       &api.Transport{PassiveMode: true},
		TtlSecurity:     &api.TtlSecurity{Enabled: true, TtlMin: 255},
		AfiSafis:        []*api.AfiSafi{afi},
	}}); err != nil {
		fmt.Println("err:", err)
		return 1
	}
	if err := srv.AddDynamicNeighbor(ctx, &api.AddDynamicNeighborRequest{DynamicNeighbor: &api.DynamicNeighbor{
		Prefix: "192.168.2.0/24", PeerGroup: "speakers",
	}}); err != nil {
		fmt.Println("err:", err)
		return 1
	}
	mu.Lock()
	say("up")
	mu.Unlock()
	_, _ = io.Copy(io.Discard, os.Stdin) // until the harness closes stdin or kills us
	return 0
}

// announced is the prefix a watched path announces (false for a
// withdrawal, End-of-RIB or another family).
func announced(p *api.Path) (string, bool) {
	if p.IsWithdraw || p.Nlri == nil {
		return "", false
	}
	var nlri api.IPAddressPrefix
	if p.Nlri.UnmarshalTo(&nlri) != nil {
		return "", false
	}
	return nlri.Prefix + "/" + strconv.Itoa(int(nlri.PrefixLen)), true
}

// watchFloor hands the prefix of every path the agent's watch would see to
// seen.
func watchFloor(ctx context.Context, srv *server.BgpServer, seen func(prefix string)) error {
	return srv.WatchEvent(ctx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_POST_POLICY, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR, Init: true},
		}},
	}, func(ev *api.WatchEventResponse) {
		t, ok := ev.Event.(*api.WatchEventResponse_Table)
		if !ok {
			return
		}
		for _, p := range t.Table.Paths {
			if prefix, ok := announced(p); ok {
				seen(prefix)
			}
		}
	})
}

// watchBestFloor hands each prefix of a best-path event with its number of
// paths (the best and those equal to it) to seen.
func watchBestFloor(ctx context.Context, srv *server.BgpServer, seen func(prefix string, paths int)) error {
	return srv.WatchEvent(ctx, &api.WatchEventRequest{
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true},
		}},
	}, func(ev *api.WatchEventResponse) {
		t, ok := ev.Event.(*api.WatchEventResponse_Table)
		if !ok {
			return
		}
		n := map[string]int{}
		for _, p := range t.Table.Paths {
			if prefix, ok := announced(p); ok {
				n[prefix]++
			}
		}
		for prefix, k := range n {
			seen(prefix, k)
		}
	})
}

// pollFloor looks up the range's prefix a quarter in, its last one and the
// probe in GoBGP's global RIB every 2 ms and says "quarter", "complete" and
// "probe" when each has its paths.
func pollFloor(ctx context.Context, srv *server.BgpServer, routes, width int, probe string, say func(string)) {
	first := netip.MustParseAddr(os.Getenv(floorFirstEnv))
	nth := func(n int) string {
		a := first
		for i := 0; i < n; i++ {
			a = a.Next()
		}
		return netip.PrefixFrom(a, 32).String()
	}
	watch := []struct {
		what, prefix string
		width        int
	}{{"quarter", nth(routes/4 - 1), width}, {"complete", nth(routes - 1), width}, {"probe", probe, 1}}
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	for len(watch) > 0 {
		time.Sleep(2 * time.Millisecond)
		for i := 0; i < len(watch); i++ {
			n := 0
			_ = srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam,
				Prefixes: []*api.TableLookupPrefix{{Prefix: watch[i].prefix}}}, func(d *api.Destination) { n += len(d.Paths) })
			if n >= watch[i].width {
				say(watch[i].what)
				watch = append(watch[:i], watch[i+1:]...)
				i--
			}
		}
	}
}

// floorRun is a started floor: its process and its reports.
type floorRun struct {
	pid      int
	quarter  <-chan time.Time
	complete <-chan time.Time
	probe    <-chan time.Time
}

// startBenchFloor starts the floor role in the router's namespace for case
// c and waits until it listens.
func startBenchFloor(b *testing.B, l *lab, c bulkCase, first, probe string, agentConf, noWatch, best bool) floorRun {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	env := []string{floorRoutesEnv + "=" + strconv.Itoa(c.routes), floorWidthEnv + "=" + strconv.Itoa(c.speakers), floorProbeEnv + "=" + probe}
	if agentConf {
		env = append(env, floorAgentConfEnv+"=1")
	}
	if noWatch {
		env = append(env, floorNoWatchEnv+"=1", floorFirstEnv+"="+first)
	}
	if best {
		env = append(env, floorBestEnv+"=1")
	}
	p := startRole(b, l.router, "gobgpfloor", env, inR, outW)
	b.Cleanup(func() { inW.Close(); outW.Close() })
	quarter, complete, probeCh := make(chan time.Time, 1), make(chan time.Time, 1), make(chan time.Time, 1)
	up := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "up" {
				up <- nil
				continue
			}
			if len(f) != 2 {
				up <- fmt.Errorf("floor: %s", sc.Text())
				continue
			}
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				continue
			}
			switch f[0] {
			case "quarter":
				quarter <- time.Unix(0, ns)
			case "complete":
				complete <- time.Unix(0, ns)
			case "probe":
				select {
				case probeCh <- time.Unix(0, ns):
				default:
				}
			}
		}
	}()
	select {
	case err := <-up:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		b.Fatal("floor: not up after 30 s")
	}
	return floorRun{pid: p.cmd.Process.Pid, quarter: quarter, complete: complete, probe: probeCh}
}
