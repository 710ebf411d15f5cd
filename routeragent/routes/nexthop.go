package routes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// github.com/vishvananda/netlink (v1.3.1) has no nexthop objects
// (RTM_NEWNEXTHOP) and does not read or write a route's RTA_NH_ID, so this
// file speaks those few messages itself over the library's nl sockets.
// The attribute numbers are the kernel's uapi (linux/nexthop.h,
// linux/rtnetlink.h).
const (
	nhaID             = 1  // NHA_ID, u32
	nhaGroup          = 2  // NHA_GROUP, array of struct nexthop_grp
	nhaGroupType      = 3  // NHA_GROUP_TYPE, u16
	nhaOIF            = 5  // NHA_OIF, u32
	nhaGateway        = 6  // NHA_GATEWAY, in_addr or in6_addr
	nhaResGroup       = 12 // NHA_RES_GROUP, nested
	nhaResBuckets     = 1  // NHA_RES_GROUP_BUCKETS, u16
	nhaResIdleTimer   = 2  // NHA_RES_GROUP_IDLE_TIMER, u32 clock_t
	nhaResUnbalTimer  = 3  // NHA_RES_GROUP_UNBALANCED_TIMER, u32 clock_t
	nhGroupTypeRes    = 1  // NEXTHOP_GRP_TYPE_RES
	rtaNHID           = 30 // RTA_NH_ID, u32
	userHZ            = 100
	sizeofNhmsg       = 8
	sizeofNexthopGrp  = 8
	sizeofRtmsgHeader = 12
)

// Nexthop is one of our nexthop objects as the kernel holds it: a gateway
// (Gateway valid, OIF its interface) or a group (Members not empty).
type Nexthop struct {
	ID uint32
	// Protocol is the owner's protocol number (ours: Config.Protocol).
	Protocol int
	Gateway  netip.Addr
	OIF      int
	// Members are the group's nexthop ids with their weights (1..256).
	Members   []GroupMember
	Resilient bool
}

// GroupMember is one entry of a nexthop group.
type GroupMember struct {
	ID     uint32
	Weight uint16
}

// Resilient group parameters. 128 buckets gives weights a resolution of
// 1/128; the idle timer lets a bucket move to a new (or heavier) next hop
// only once no packet has used it for that long, so flows in progress keep
// their next hop; the unbalanced timer bounds how long a group may stay
// off its weights under constant load. A next hop removed from a group
// moves its own buckets at once, and only those.
const (
	ResilientBuckets         = 128
	ResilientIdleTimer       = 10 * time.Second
	ResilientUnbalancedTimer = 60 * time.Second
)

// NexthopKernel is the kernel side of nexthop objects and of routes that
// use them (the kernel client below implements it; tests may fake it).
type NexthopKernel interface {
	// ListNexthops dumps every nexthop object (of any protocol).
	ListNexthops() ([]Nexthop, error)
	// SetNexthop creates (create: NLM_F_EXCL, never over another's) or
	// replaces a nexthop object of protocol proto.
	SetNexthop(nh Nexthop, proto int, create bool) error
	// GatewayOIF is the interface through which gw is reached.
	GatewayOIF(gw netip.Addr) (int, error)
	// DeleteNexthop deletes a nexthop object by id.
	DeleteNexthop(id uint32) error
	// RouteNexthopIDs dumps the routes of protocol proto in table and returns
	// the nexthop id (RTA_NH_ID) of those that use one, by prefix and metric.
	RouteNexthopIDs(table, proto int) (map[routeKey]uint32, error)
	// SetRouteNexthop adds (NLM_F_EXCL) or replaces a route that uses
	// nexthop object id.
	SetRouteNexthop(add bool, pfx netip.Prefix, table, metric, proto int, id uint32) error
	// SetRouteNexthops is SetRouteNexthop for several routes at once (in
	// order, several to a system call); errs[i] is the outcome of rs[i].
	SetRouteNexthops(rs []RouteNexthop) (errs []error)
}

type routeKey struct {
	Prefix netip.Prefix
	Metric int
}

// nlNexthops implements NexthopKernel over one netlink socket in a network
// namespace.
type nlNexthops struct {
	sock *nl.SocketHandle
	h    *netlink.Handle // for RouteGet, in the same namespace
}

// newNexthopKernel opens a route netlink socket in ns (netns.None(): the
// current namespace).
func newNexthopKernel(ns netns.NsHandle) (*nlNexthops, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket for nexthop objects: %w", err)
	}
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := errors.Join(s.SetSendTimeout(&tv), s.SetReceiveTimeout(&tv)); err != nil {
		s.Close()
		return nil, fmt.Errorf("netlink socket timeouts: %w", err)
	}
	_ = s.SetExtAck(true) // error messages are a nicety; older kernels lack them
	// Room for the answers of a batch of route requests whose every route
	// fails (SetRouteNexthops); capped by net.core.rmem_max, and a batch
	// whose answers overrun it reports an error, not a wrong outcome.
	_ = s.SetReceiveBufferSize(routeBatchRcvBuf, false)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("netlink handle for nexthop objects: %w", err)
	}
	return &nlNexthops{sock: &nl.SocketHandle{Socket: s}, h: h}, nil
}

// Close releases the sockets.
func (k *nlNexthops) Close() {
	k.sock.Close()
	k.h.Close()
}

func (k *nlNexthops) GatewayOIF(gw netip.Addr) (int, error) {
	rts, err := k.h.RouteGet(gw.AsSlice())
	if err != nil {
		return 0, fmt.Errorf("route to next hop %s: %w", gw, err)
	}
	if len(rts) == 0 || rts[0].LinkIndex == 0 {
		return 0, fmt.Errorf("route to next hop %s: no interface", gw)
	}
	return rts[0].LinkIndex, nil
}

func (k *nlNexthops) request(typ, flags int) *nl.NetlinkRequest {
	return &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{Len: unix.SizeofNlMsghdr, Type: uint16(typ), Flags: unix.NLM_F_REQUEST | uint16(flags)},
		Sockets:  map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: k.sock},
	}
}

// rawData is a message header (nhmsg, rtmsg) for nl.NetlinkRequest, which
// serializes Data in order but RawData after it.
type rawData []byte

func (d rawData) Len() int          { return len(d) }
func (d rawData) Serialize() []byte { return d }

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.NativeEndian.AppendUint16(nil, v) }

func nhmsg(family, proto int) []byte {
	return []byte{byte(family), unix.RT_SCOPE_UNIVERSE, byte(proto), 0, 0, 0, 0, 0}
}

func (k *nlNexthops) SetNexthop(nh Nexthop, proto int, create bool) error {
	flags := unix.NLM_F_ACK | unix.NLM_F_REPLACE
	if create {
		flags = unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	req := k.request(unix.RTM_NEWNEXTHOP, flags)
	family := unix.AF_UNSPEC
	if len(nh.Members) == 0 {
		family = unix.AF_INET6
		if nh.Gateway.Is4() {
			family = unix.AF_INET
		}
	}
	req.AddData(rawData(nhmsg(family, proto)))
	req.AddData(nl.NewRtAttr(nhaID, u32(nh.ID)))
	if len(nh.Members) == 0 {
		req.AddData(nl.NewRtAttr(nhaGateway, nh.Gateway.AsSlice()))
		req.AddData(nl.NewRtAttr(nhaOIF, u32(uint32(nh.OIF))))
	} else {
		grp := make([]byte, 0, sizeofNexthopGrp*len(nh.Members))
		for _, m := range nh.Members {
			w := max(m.Weight, 1) - 1 // the kernel stores weight-1 in a u8
			grp = binary.NativeEndian.AppendUint32(grp, m.ID)
			grp = append(grp, byte(w), 0, 0, 0)
		}
		req.AddData(nl.NewRtAttr(nhaGroup, grp))
		if nh.Resilient {
			req.AddData(nl.NewRtAttr(nhaGroupType, u16(nhGroupTypeRes)))
			res := nl.NewRtAttr(nhaResGroup|unix.NLA_F_NESTED, nil)
			// The bucket count is fixed at creation; a replace that
			// repeats it is accepted, and keeps the buckets' next hops.
			res.AddRtAttr(nhaResBuckets, u16(ResilientBuckets))
			res.AddRtAttr(nhaResIdleTimer, u32(uint32(ResilientIdleTimer.Seconds()*userHZ)))
			res.AddRtAttr(nhaResUnbalTimer, u32(uint32(ResilientUnbalancedTimer.Seconds()*userHZ)))
			req.AddData(res)
		}
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil {
		return fmt.Errorf("nexthop id %d: %w", nh.ID, err)
	}
	return nil
}

func (k *nlNexthops) DeleteNexthop(id uint32) error {
	req := k.request(unix.RTM_DELNEXTHOP, unix.NLM_F_ACK)
	req.AddData(rawData(nhmsg(unix.AF_UNSPEC, 0)))
	req.AddData(nl.NewRtAttr(nhaID, u32(id)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("delete nexthop id %d: %w", id, err)
	}
	return nil
}

func (k *nlNexthops) ListNexthops() ([]Nexthop, error) {
	var out []Nexthop
	var err error
	for range 5 {
		out, err = k.listNexthops()
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

func (k *nlNexthops) listNexthops() ([]Nexthop, error) {
	req := k.request(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	req.AddData(rawData(nhmsg(unix.AF_UNSPEC, 0)))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		return nil, fmt.Errorf("dump nexthops: %w", err)
	}
	var out []Nexthop
	for _, m := range msgs {
		if len(m) < sizeofNhmsg {
			continue
		}
		nh, err := parseNexthop(m)
		if err != nil {
			return nil, err
		}
		out = append(out, nh)
	}
	return out, nil
}

func parseNexthop(m []byte) (Nexthop, error) {
	attrs, err := nl.ParseRouteAttr(m[sizeofNhmsg:])
	if err != nil {
		return Nexthop{}, fmt.Errorf("parse nexthop: %w", err)
	}
	nh := Nexthop{Protocol: int(m[2])}
	for _, a := range attrs {
		switch a.Attr.Type {
		case nhaID:
			nh.ID = binary.NativeEndian.Uint32(a.Value)
		case nhaOIF:
			nh.OIF = int(binary.NativeEndian.Uint32(a.Value))
		case nhaGateway:
			if ip, ok := netip.AddrFromSlice(a.Value); ok {
				nh.Gateway = ip.Unmap()
			}
		case nhaGroupType:
			nh.Resilient = binary.NativeEndian.Uint16(a.Value) == nhGroupTypeRes
		case nhaGroup:
			for b := a.Value; len(b) >= sizeofNexthopGrp; b = b[sizeofNexthopGrp:] {
				w := uint16(b[4]) | uint16(b[5])<<8 // weight-1, low and high byte
				nh.Members = append(nh.Members, GroupMember{ID: binary.NativeEndian.Uint32(b), Weight: w + 1})
			}
		}
	}
	return nh, nil
}

func (k *nlNexthops) RouteNexthopIDs(table, proto int) (map[routeKey]uint32, error) {
	var out map[routeKey]uint32
	var err error
	for range 5 {
		out, err = k.routeNexthopIDs(table, proto)
		if !errors.Is(err, nl.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

func (k *nlNexthops) routeNexthopIDs(table, proto int) (map[routeKey]uint32, error) {
	out := map[routeKey]uint32{}
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		req := k.request(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
		hdr := make(rawData, sizeofRtmsgHeader)
		hdr[0] = byte(family)
		req.AddData(hdr)
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
		if err != nil {
			return nil, fmt.Errorf("dump routes: %w", err)
		}
		for _, m := range msgs {
			if len(m) < sizeofRtmsgHeader || int(m[5]) != proto {
				continue
			}
			attrs, err := nl.ParseRouteAttr(m[sizeofRtmsgHeader:])
			if err != nil {
				return nil, fmt.Errorf("parse route: %w", err)
			}
			tbl, metric, id := int(m[4]), 0, uint32(0)
			var dst netip.Addr
			for _, a := range attrs {
				switch a.Attr.Type {
				case unix.RTA_DST:
					dst, _ = netip.AddrFromSlice(a.Value)
				case unix.RTA_TABLE:
					tbl = int(binary.NativeEndian.Uint32(a.Value))
				case unix.RTA_PRIORITY:
					metric = int(binary.NativeEndian.Uint32(a.Value))
				case rtaNHID:
					id = binary.NativeEndian.Uint32(a.Value)
				}
			}
			if tbl != table || id == 0 || !dst.IsValid() {
				continue
			}
			out[routeKey{netip.PrefixFrom(dst.Unmap(), int(m[1])).Masked(), metric}] = id
		}
	}
	return out, nil
}

// RouteNexthop is one route through a nexthop object to add (Add: with
// NLM_F_EXCL, never over another's route) or replace.
type RouteNexthop struct {
	Add                  bool
	Prefix               netip.Prefix
	Table, Metric, Proto int
	ID                   uint32
}

// routeBatchMax is the most route requests sent in one sendmsg: each is
// about 60 bytes, and an error answer (which echoes its request) about
// 1 KB of the socket's receive buffer, so a batch whose every route fails
// still fits (the buffer is raised to routeBatchRcvBuf where allowed). A
// variable for BenchmarkInstall10kGroups only.
var routeBatchMax = 128

const routeBatchRcvBuf = 1 << 20

func (k *nlNexthops) SetRouteNexthop(add bool, pfx netip.Prefix, table, metric, proto int, id uint32) error {
	return k.SetRouteNexthops([]RouteNexthop{{Add: add, Prefix: pfx, Table: table, Metric: metric, Proto: proto, ID: id}})[0]
}

// SetRouteNexthops sends the routes up to routeBatchMax to a sendmsg: the
// kernel carries the messages of one buffer out in order, answers only
// those that fail and, because the last asks for an acknowledgement, the
// last, after which every answer of the batch has arrived. One system call
// each way per batch instead of a send, a getsockname and a receive per
// route (issue 20: 13 % of the agent's CPU during a bulk). errs[i] is the
// outcome of rs[i]; when the answers cannot be read (a timeout, a receive
// buffer overrun) the whole batch reports the error, though some routes
// may be in: the caller then re-reads the table.
func (k *nlNexthops) SetRouteNexthops(rs []RouteNexthop) []error {
	errs := make([]error, len(rs))
	s := k.sock.Socket
	s.Lock()
	defer s.Unlock()
	for start := 0; start < len(rs); start += routeBatchMax {
		end := min(start+routeBatchMax, len(rs))
		k.sendRouteBatch(s, rs[start:end], errs[start:end])
	}
	return errs
}

func (k *nlNexthops) sendRouteBatch(s *nl.NetlinkSocket, rs []RouteNexthop, errs []error) {
	n := uint32(len(rs))
	first := atomic.AddUint32(&k.sock.Seq, n) - n + 1
	last := first + n - 1
	buf := make([]byte, 0, len(rs)*64)
	for i, r := range rs {
		req := routeNexthopRequest(r, i == len(rs)-1)
		req.Seq = first + uint32(i)
		buf = append(buf, req.Serialize()...)
	}
	fail := func(err error) {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	if err := unix.Sendto(s.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("send %d route requests: %w", len(rs), err))
		return
	}
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			fail(fmt.Errorf("answers to %d route requests: %w", len(rs), err))
			return
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq < first || m.Header.Seq > last {
				continue // an answer to an earlier request that timed out
			}
			errs[m.Header.Seq-first] = ackError(m)
			if m.Header.Seq == last {
				return
			}
		}
	}
}

// routeNexthopRequest is the RTM_NEWROUTE of r; ack asks for an answer
// also on success.
func routeNexthopRequest(r RouteNexthop, ack bool) *nl.NetlinkRequest {
	flags := unix.NLM_F_REQUEST | unix.NLM_F_CREATE
	if r.Add {
		flags |= unix.NLM_F_EXCL
	} else {
		flags |= unix.NLM_F_REPLACE
	}
	if ack {
		flags |= unix.NLM_F_ACK
	}
	req := &nl.NetlinkRequest{NlMsghdr: unix.NlMsghdr{Len: unix.SizeofNlMsghdr, Type: unix.RTM_NEWROUTE, Flags: uint16(flags)}}
	family := unix.AF_INET6
	if r.Prefix.Addr().Is4() {
		family = unix.AF_INET
	}
	tbl := byte(unix.RT_TABLE_UNSPEC)
	if r.Table < 256 {
		tbl = byte(r.Table)
	}
	req.AddData(rawData{byte(family), byte(r.Prefix.Bits()), 0, 0, tbl, byte(r.Proto), unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0})
	req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Prefix.Addr().AsSlice()))
	req.AddData(nl.NewRtAttr(unix.RTA_TABLE, u32(uint32(r.Table))))
	req.AddData(nl.NewRtAttr(unix.RTA_PRIORITY, u32(uint32(r.Metric))))
	req.AddData(nl.NewRtAttr(rtaNHID, u32(r.ID)))
	return req
}

// ackError reads an NLMSG_ERROR answer: nil for an acknowledgement, else
// the errno with the kernel's extended-ack message when it sent one (as
// nl.NetlinkRequest.Execute reports it).
func ackError(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return fmt.Errorf("short netlink answer (%d bytes)", len(m.Data))
	}
	errno := int32(binary.NativeEndian.Uint32(m.Data[:4]))
	if errno == 0 {
		return nil
	}
	err := error(syscall.Errno(-errno))
	rest := m.Data[4:]
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(rest) < unix.SizeofNlMsghdr {
		return err
	}
	echoed := int(binary.NativeEndian.Uint32(rest[:4])) // the request, echoed
	if echoed = (echoed + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); echoed > len(rest) {
		return err
	}
	attrs, perr := nl.ParseRouteAttr(rest[echoed:])
	if perr != nil {
		return err
	}
	for _, a := range attrs {
		if a.Attr.Type == nl.NLMSGERR_ATTR_MSG {
			return fmt.Errorf("%w: %s", err, unix.ByteSliceToString(a.Value))
		}
	}
	return err
}

// nexthopsUnsupported reports whether err says the kernel has no nexthop
// objects (before 5.3) or no resilient groups (before 5.13).
func nexthopsUnsupported(err error) bool {
	return errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT)
}
