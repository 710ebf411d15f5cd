// Package metallb converts MetalLB's BGP configuration (metallb.io
// IPAddressPool, BGPPeer and BGPAdvertisement) to bgplb's (bgplb.io/v1alpha1
// IPPool, BGPPeer and BGPAdvertisement), for `bgplb-controller
// migrate-metallb`.
//
// Convert is pure: it takes the MetalLB objects as unstructured objects (so
// that bgplb needs no MetalLB Go dependency) and returns bgplb objects plus
// a Finding for everything that was not carried over as written. Reading
// the objects (Decode, List) and writing the result (Encode) are separate.
package metallb

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	bgplbv1 "github.com/bgplb/bgplb/api/v1alpha1"
)

// Group is MetalLB's API group.
const Group = "metallb.io"

// Finding is one thing the conversion could not carry over as written: a
// field bgplb has no equivalent for, a value it does not accept, an object
// it skipped, or a step left to the user.
type Finding struct {
	// Object names the MetalLB object: "metallb.io/v1beta2 BGPPeer metallb-system/peer".
	Object string
	// Field is the path of the field in the MetalLB object ("spec.bfdProfile"),
	// empty when the finding is about the whole object.
	Field string
	// Message says what happened and what to do.
	Message string
}

func (f Finding) String() string {
	if f.Field == "" {
		return f.Object + ": " + f.Message
	}
	return f.Object + ": " + f.Field + ": " + f.Message
}

// Converted is one bgplb object and the MetalLB object it came from.
type Converted struct {
	Object client.Object
	// From names the MetalLB object, as Finding.Object.
	From string
}

// Result is the outcome of Convert.
type Result struct {
	// Objects are the bgplb objects, in input order.
	Objects []Converted
	// Findings are what was not converted as written, in input order.
	Findings []Finding
}

// Convert turns MetalLB objects into bgplb objects. Community objects are
// used to resolve community aliases and produce nothing themselves;
// objects of other kinds produce a Finding.
func Convert(in []*unstructured.Unstructured) Result {
	aliases, fs := communityAliases(in)
	c := converter{aliases: aliases, seen: map[string]string{}, res: Result{Findings: fs}}
	for _, u := range in {
		c.object(u)
	}
	return c.res
}

type converter struct {
	aliases map[string]string
	// seen maps "Kind/name" of the output to the MetalLB object it came
	// from: bgplb's kinds are cluster-scoped, MetalLB's are namespaced.
	seen map[string]string
	res  Result
}

// objectRef is how findings name a MetalLB object.
func objectRef(u *unstructured.Unstructured) string {
	name := u.GetName()
	if ns := u.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return u.GetAPIVersion() + " " + u.GetKind() + " " + name
}

// report records findings against one object.
type report struct {
	ref string
	fs  *[]Finding
}

func (r report) add(field, format string, args ...any) {
	*r.fs = append(*r.fs, Finding{Object: r.ref, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (c *converter) object(u *unstructured.Unstructured) {
	r := report{ref: objectRef(u), fs: &c.res.Findings}
	gv := u.GroupVersionKind()
	if gv.Group != Group {
		r.add("", "not a MetalLB object; ignored")
		return
	}
	var out client.Object
	switch gv.Kind {
	case "IPAddressPool":
		out = c.pool(u, r)
	case "BGPPeer":
		out = c.peer(u, r)
	case "BGPAdvertisement":
		out = c.advertisement(u, r)
	case "Community":
		return // used for aliases
	case "L2Advertisement":
		r.add("", "not converted: bgplb announces addresses over BGP only. Pools announced only by this L2Advertisement get no BGP announcement unless a BGPAdvertisement selects them")
		return
	case "BFDProfile":
		r.add("", "not converted: bgplb has no BFD (GoBGP v3 has none); use a short holdTime on the BGPPeer (for example 9s) to detect a dead node in seconds")
		return
	case "ServiceL2Status", "ServiceBGPStatus", "ConfigurationState":
		return // status written by MetalLB, nothing to convert
	default:
		r.add("", "kind %s is not converted", gv.Kind)
		return
	}
	if out == nil {
		return
	}
	key := fmt.Sprintf("%T/%s", out, out.GetName())
	if prev, dup := c.seen[key]; dup {
		r.add("metadata.name", "not converted: bgplb objects are cluster-scoped and %s already produced one named %q; rename one of them", prev, out.GetName())
		return
	}
	c.seen[key] = r.ref
	c.res.Objects = append(c.res.Objects, Converted{Object: out, From: r.ref})
}

// decodeSpec reads spec into out and reports fields this package does not
// know, which would otherwise be dropped without a word.
func decodeSpec(u *unstructured.Unstructured, known []string, out any, r report) bool {
	spec, _, err := unstructured.NestedMap(u.Object, "spec")
	if err != nil {
		r.add("spec", "not converted: %v", err)
		return false
	}
	for _, k := range sortedKeys(spec) {
		if !slices.Contains(known, k) {
			r.add("spec."+k, "unknown MetalLB field, not converted; check whether bgplb has an equivalent")
		}
	}
	b, err := json.Marshal(spec)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		r.add("spec", "not converted: %v", err)
		return false
	}
	return true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// objectMeta keeps the name and the labels (BGPAdvertisements may select pools
// by label). The namespace goes: bgplb's kinds are cluster-scoped.
func objectMeta(u *unstructured.Unstructured) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: u.GetName(), Labels: u.GetLabels()}
}

func (c *converter) pool(u *unstructured.Unstructured, r report) client.Object {
	var s poolSpec
	if !decodeSpec(u, poolFields, &s, r) {
		return nil
	}
	addrs := poolAddresses(s.Addresses, r)
	if len(addrs) == 0 {
		r.add("spec.addresses", "not converted: no usable address")
		return nil
	}
	p := &bgplbv1.IPPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: bgplbv1.GroupVersion.String(), Kind: "IPPool"},
		ObjectMeta: objectMeta(u),
		Spec: bgplbv1.IPPoolSpec{
			Addresses:     addrs,
			AutoAssign:    s.AutoAssign,
			AvoidBuggyIPs: s.AvoidBuggyIPs,
		},
	}
	p.Spec.ServiceAllocation = poolAllocation(s.ServiceAllocation, r)
	return p
}

// poolAddresses normalises each entry to what bgplb's CRD accepts: CIDRs
// without host bits (MetalLB masks them silently, as net.ParseCIDR does)
// and ranges without spaces.
func poolAddresses(in []string, r report) []string {
	var out []string
	for i, a := range in {
		field := fmt.Sprintf("spec.addresses[%d]", i)
		if from, to, ok := strings.Cut(a, "-"); ok {
			lo, err1 := netip.ParseAddr(strings.TrimSpace(from))
			hi, err2 := netip.ParseAddr(strings.TrimSpace(to))
			switch {
			case err1 != nil || err2 != nil:
				r.add(field, "%q is not a range of two addresses; dropped", a)
			case lo.Is4() != hi.Is4():
				r.add(field, "%q mixes IPv4 and IPv6; dropped", a)
			case hi.Less(lo):
				r.add(field, "%q ends before it starts; dropped", a)
			default:
				out = append(out, lo.String()+"-"+hi.String())
			}
			continue
		}
		p, err := netip.ParsePrefix(strings.TrimSpace(a))
		if err != nil {
			r.add(field, "%q is not a CIDR or a range; dropped", a)
			continue
		}
		out = append(out, p.Masked().String())
	}
	if len(out) > 64 {
		r.add("spec.addresses", "bgplb takes at most 64 entries per pool; %d dropped: split the pool", len(out)-64)
		out = out[:64]
	}
	return out
}

// namespaceNameLabel is set by the apiserver on every namespace (Kubernetes
// 1.21 and later) to the namespace's name.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// poolAllocation converts serviceAllocation. MetalLB allows a namespace if
// it is listed in namespaces OR matches a namespaceSelector; bgplb accepts
// one of the two lists, so a list used together with selectors becomes one
// more selector on the namespace's name label, which keeps the union.
func poolAllocation(in *serviceAllocation, r report) *bgplbv1.ServiceAllocation {
	if in == nil {
		return nil
	}
	out := &bgplbv1.ServiceAllocation{
		Namespaces:         in.Namespaces,
		NamespaceSelectors: in.NamespaceSelectors,
		ServiceSelectors:   in.ServiceSelectors,
	}
	switch {
	case in.Priority < 0:
		r.add("spec.serviceAllocation.priority", "%d is negative; bgplb takes 0 or more (0: lowest preference), set to 0", in.Priority)
	case in.Priority > 1<<31-1:
		r.add("spec.serviceAllocation.priority", "%d is too large; set to 2147483647", in.Priority)
		out.Priority = 1<<31 - 1
	default:
		out.Priority = int32(in.Priority)
	}
	if len(in.Namespaces) > 0 && len(in.NamespaceSelectors) > 0 {
		byName := metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: namespaceNameLabel, Operator: metav1.LabelSelectorOpIn, Values: slices.Clone(in.Namespaces),
		}}}
		out.NamespaceSelectors = append([]metav1.LabelSelector{byName}, in.NamespaceSelectors...)
		out.Namespaces = nil
	}
	return out
}

func (c *converter) peer(u *unstructured.Unstructured, r report) client.Object {
	var s peerSpec
	if !decodeSpec(u, peerFields, &s, r) {
		return nil
	}
	spec, ok := peerSession(s, r)
	if !ok {
		return nil
	}
	peerTimers(s, &spec, r)
	peerPassword(s, u, &spec, r)
	peerUnsupported(s, r)
	spec.NodeSelectors = s.NodeSelectors
	if s.EnableGracefulRestart {
		spec.GracefulRestart = &bgplbv1.GracefulRestart{Enabled: true}
	}
	return &bgplbv1.BGPPeer{
		TypeMeta:   metav1.TypeMeta{APIVersion: bgplbv1.GroupVersion.String(), Kind: "BGPPeer"},
		ObjectMeta: objectMeta(u),
		Spec:       spec,
	}
}

// peerSession converts who talks to whom: the ASNs, the addresses, the
// port and the TTL. It reports false when bgplb cannot express the session.
func peerSession(s peerSpec, r report) (bgplbv1.BGPPeerSpec, bool) {
	var out bgplbv1.BGPPeerSpec
	// localASN is what the router sees as the node's AS ("local-as ...
	// no-prepend replace-as"); bgplb sets the node's AS per peer anyway.
	out.MyASN = s.MyASN
	if s.LocalASN != 0 {
		out.MyASN = s.LocalASN
	}
	if out.MyASN == 0 {
		r.add("spec.myASN", "not converted: bgplb needs an AS number from 1 to 4294967295")
		return out, false
	}
	out.PeerASN = s.PeerASN
	if out.PeerASN == 0 {
		if s.DynamicASN != "internal" {
			r.add("spec.dynamicASN", "not converted: bgplb needs the router's AS number; write it in spec.peerASN of the converted BGPPeer")
			return out, false
		}
		// internal: the router's AS is the node's.
		out.PeerASN = out.MyASN
	}
	if s.PeerAddress == "" {
		r.add("spec.interface", "not converted: bgplb has no unnumbered (interface) sessions; name the router's address in spec.peerAddress")
		return out, false
	}
	peer, err := netip.ParseAddr(s.PeerAddress)
	if err != nil {
		r.add("spec.peerAddress", "not converted: %q is not an IP address", s.PeerAddress)
		return out, false
	}
	out.PeerAddress = peer.String()
	if s.SourceAddress != "" {
		src, err := netip.ParseAddr(s.SourceAddress)
		if err != nil || src.Is4() != peer.Is4() {
			r.add("spec.sourceAddress", "%q is not an address of the peer's family; dropped (the kernel chooses)", s.SourceAddress)
		} else {
			out.SourceAddress = src.String()
		}
	}
	if s.PeerPort != 0 {
		out.PeerPort = ptr.To(s.PeerPort)
	}
	// FRR's "ebgp-multihop" without a number is TTL 255. On iBGP it does
	// nothing, and bgplb leaves iBGP's TTL alone too.
	if s.EBGPMultiHop && out.MyASN != out.PeerASN {
		out.EBGPMultiHop = ptr.To[int32](255)
	}
	return out, true
}

const (
	minHoldTime = 3 * time.Second
	maxHoldTime = 65535 * time.Second
)

// peerTimers converts holdTime and keepaliveTime as MetalLB reads them:
// one given alone sets the other (keepalive = hold/3, hold = 3*keepalive).
func peerTimers(s peerSpec, out *bgplbv1.BGPPeerSpec, r report) {
	hold, ka := s.HoldTime, s.KeepaliveTime
	if hold == nil && ka != nil && ka.Duration > 0 {
		hold = &metav1.Duration{Duration: 3 * ka.Duration}
	}
	if hold != nil {
		if hold.Duration < minHoldTime || hold.Duration > maxHoldTime {
			r.add("spec.holdTime", "%s is outside bgplb's 3s-65535s (0 would mean no keepalives, which bgplb does not do); dropped, the default is 90s", hold.Duration)
			hold = nil
		} else {
			out.HoldTime = &metav1.Duration{Duration: hold.Duration}
		}
	}
	if ka == nil {
		return
	}
	holdOrDefault := 90 * time.Second
	if hold != nil {
		holdOrDefault = hold.Duration
	}
	switch {
	case ka.Duration < time.Second:
		r.add("spec.keepaliveTime", "%s is below bgplb's 1s (0 would mean no keepalives); dropped, keepalives are sent every holdTime/3", ka.Duration)
	case ka.Duration >= holdOrDefault:
		r.add("spec.keepaliveTime", "%s is not shorter than the hold time %s; dropped, keepalives are sent every holdTime/3", ka.Duration, holdOrDefault)
	default:
		out.KeepaliveTime = &metav1.Duration{Duration: ka.Duration}
	}
}

// peerPassword converts the TCP-MD5 password. bgplb reads it only from a
// Secret in bgplb-system, so both MetalLB forms leave the user one step.
func peerPassword(s peerSpec, u *unstructured.Unstructured, out *bgplbv1.BGPPeerSpec, r report) {
	switch {
	case s.PasswordSecret != nil && s.PasswordSecret.Name != "":
		ns := s.PasswordSecret.Namespace
		if ns == "" {
			ns = u.GetNamespace()
		}
		name := s.PasswordSecret.Name
		out.PasswordSecret = &bgplbv1.SecretKeyReference{Name: name, Key: "password"}
		r.add("spec.passwordSecret", "bgplb reads the password from a Secret in %s: copy it with "+
			"kubectl -n %s get secret %s -o go-template='{{.data.password|base64decode}}' | kubectl -n %s create secret generic %s --from-file=password=/dev/stdin",
			bgplbv1.Namespace, nsOrDefault(ns), name, bgplbv1.Namespace, name)
		if s.Password != "" {
			r.add("spec.password", "ignored in favour of spec.passwordSecret")
		}
	case s.Password != "":
		name := u.GetName() + "-bgp-password"
		out.PasswordSecret = &bgplbv1.SecretKeyReference{Name: name, Key: "password"}
		r.add("spec.password", "bgplb does not take passwords in plain text; the converted peer reads Secret %s/%s, create it with "+
			"kubectl -n %s create secret generic %s --from-literal=password='THE PASSWORD'",
			bgplbv1.Namespace, name, bgplbv1.Namespace, name)
	}
}

func nsOrDefault(ns string) string {
	if ns == "" {
		return "metallb-system"
	}
	return ns
}

// peerUnsupported reports the MetalLB session options bgplb does not have.
func peerUnsupported(s peerSpec, r report) {
	if s.BFDProfile != "" {
		r.add("spec.bfdProfile", "not converted: bgplb has no BFD (GoBGP v3 has none); a short spec.holdTime (for example 9s) detects a dead node in seconds")
	}
	if s.VRF != "" {
		r.add("spec.vrf", "not converted: bgplb opens sessions in the node's main routing table; check that the router's address is reachable from it")
	}
	if s.ConnectTime != nil {
		r.add("spec.connectTime", "not converted: bgplb uses GoBGP's connect-retry timer")
	}
	if s.RouterID != "" {
		r.add("spec.routerID", "not converted: bgplb uses the node's first IPv4 InternalIP as router ID")
	}
	if s.DualStackAddressFamily {
		r.add("spec.dualStackAddressFamily", "not converted: bgplb announces IPv4 addresses over IPv4 sessions and IPv6 over IPv6; add a BGPPeer for the router's other address")
	}
	// disableMP: one family per session is what bgplb always does.
}

func (c *converter) advertisement(u *unstructured.Unstructured, r report) client.Object {
	var s advSpec
	if !decodeSpec(u, advFields, &s, r) {
		return nil
	}
	spec := bgplbv1.BGPAdvertisementSpec{
		IPPools:             s.IPAddressPools,
		IPPoolSelectors:     s.IPAddressPoolSelectors,
		ServiceSelectors:    s.ServiceSelectors,
		NodeSelectors:       s.NodeSelectors,
		Peers:               s.Peers,
		Communities:         c.communities(s.Communities, r),
		AggregationLength:   s.AggregationLength,
		AggregationLengthV6: s.AggregationLengthV6,
	}
	if s.LocalPref != 0 { // MetalLB's 0 is "not set"
		spec.LocalPref = ptr.To(s.LocalPref)
	}
	aggregationWarning("spec.aggregationLength", s.AggregationLength, 32, r)
	aggregationWarning("spec.aggregationLengthV6", s.AggregationLengthV6, 128, r)
	return &bgplbv1.BGPAdvertisement{
		TypeMeta:   metav1.TypeMeta{APIVersion: bgplbv1.GroupVersion.String(), Kind: "BGPAdvertisement"},
		ObjectMeta: objectMeta(u),
		Spec:       spec,
	}
}

// aggregationWarning: the value converts as it is, but bgplb's own router
// agent installs host routes only and rejects shorter prefixes.
func aggregationWarning(field string, length *int32, host int32, r report) {
	if length != nil && *length < host {
		r.add(field, "converted, but bgplb-routeragent accepts only /%d routes and rejects these (reason not-host-route); other routers take them", host)
	}
}

// communities resolves aliases and rewrites MetalLB's "large:a:b:c" to
// bgplb's "a:b:c".
func (c *converter) communities(in []string, r report) []string {
	var out []string
	for i, v := range in {
		field := fmt.Sprintf("spec.communities[%d]", i)
		if alias, ok := c.aliases[v]; ok {
			v = alias
		}
		got, err := community(v)
		if err != nil {
			r.add(field, "%q: %v; dropped (an alias needs its Community object in the input)", in[i], err)
			continue
		}
		out = append(out, got)
	}
	return out
}

// community validates one MetalLB community value and writes it as bgplb does.
func community(v string) (string, error) {
	parts := strings.Split(v, ":")
	limit := uint64(65535)
	switch {
	case len(parts) == 4 && parts[0] == "large":
		parts, limit = parts[1:], 1<<32-1
	case len(parts) == 2:
	default:
		return "", fmt.Errorf("not a community (65000:100 or large:65000:1:2)")
	}
	for _, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil || n > limit {
			return "", fmt.Errorf("%q is not a number from 0 to %d", p, limit)
		}
	}
	return strings.Join(parts, ":"), nil
}

// communityAliases collects the aliases of every Community object.
func communityAliases(in []*unstructured.Unstructured) (map[string]string, []Finding) {
	aliases := map[string]string{}
	var fs []Finding
	for _, u := range in {
		if u.GroupVersionKind().Group != Group || u.GetKind() != "Community" {
			continue
		}
		var s communitySpec
		if !decodeSpec(u, []string{"communities"}, &s, report{ref: objectRef(u), fs: &fs}) {
			continue
		}
		for _, a := range s.Communities {
			aliases[a.Name] = a.Value
		}
	}
	return aliases, fs
}
