package model

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseCommunity: any spec.communities entry never panics the parser;
// a refusal quotes the entry; an accepted entry is a well-known name (case
// ignored, a value in the reserved 0xFFFF0000-0xFFFFFFFF block) or two or
// three decimal numbers separated by colons and nothing else; its canonical
// text (`hi:lo` for a standard community, `a:b:c` for a large one) parses
// back to the same community and equals the entry up to leading zeros; and
// every standard (a:b, 16-bit halves) and large (three 32-bit numbers)
// community printed that way parses back to itself. Seeds:
// testdata/fuzz/FuzzParseCommunity.
func FuzzParseCommunity(f *testing.F) {
	for _, s := range []string{
		"65000:100", "0:0", "65535:65535", "65536:1", "no-export", "NO-ADVERTISE", "No-Peer",
		"graceful-shutdown", "blackhole", "local-as", "4294967295:1:2", "4294967296:1:2", "1:2:3:4",
		"abc", "-1:2", "+1:2", "1_0:2", "0x10:2", "065000:0100", ":", "::", "1:", ":1", " 1:2", "1:2 ",
		"65000:100:", "٣:٤", "",
	} {
		f.Add(s, uint16(65000), uint16(100), uint32(4200000000), uint32(1), uint32(2))
	}
	f.Fuzz(func(t *testing.T, s string, hi, lo uint16, ga, l1, l2 uint32) {
		std, large, err := ParseCommunity(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not quote the entry %q", err, s)
			}
			if std != 0 || large != nil {
				t.Fatalf("error with a value: %#x %v", std, large)
			}
		} else if _, wk := wellKnownCommunities[strings.ToLower(s)]; wk {
			if large != nil || std < 0xFFFF0000 {
				t.Fatalf("well-known %q = %#x %v, outside the reserved block", s, std, large)
			}
		} else {
			if strings.Trim(s, "0123456789:") != "" {
				t.Fatalf("accepted %q, which is not decimal numbers and colons", s)
			}
			canon := printCommunity(std, large)
			if stripLeadingZeros(s) != canon {
				t.Fatalf("%q parsed as %q", s, canon)
			}
			std2, large2, err := ParseCommunity(canon)
			if err != nil || std2 != std || fmt.Sprint(large2) != fmt.Sprint(large) {
				t.Fatalf("%q -> %q -> %#x %v %v", s, canon, std2, large2, err)
			}
		}

		// Every community printed canonically parses back.
		wantStd := uint32(hi)<<16 | uint32(lo)
		if got, l, err := ParseCommunity(printCommunity(wantStd, nil)); err != nil || l != nil || got != wantStd {
			t.Fatalf("%d:%d parsed as %#x %v %v", hi, lo, got, l, err)
		}
		wantLarge := LargeCommunity{ga, l1, l2}
		if got, l, err := ParseCommunity(printCommunity(0, &wantLarge)); err != nil || got != 0 || l == nil || *l != wantLarge {
			t.Fatalf("%v parsed as %#x %v %v", wantLarge, got, l, err)
		}
	})
}

// printCommunity is the canonical text of a standard (large nil) or large
// community.
func printCommunity(std uint32, large *LargeCommunity) string {
	if large != nil {
		return fmt.Sprintf("%d:%d:%d", large.GlobalAdmin, large.LocalData1, large.LocalData2)
	}
	return fmt.Sprintf("%d:%d", std>>16, std&0xFFFF)
}

// stripLeadingZeros removes leading zeros of every colon-separated number
// (keeping one digit).
func stripLeadingZeros(s string) string {
	parts := strings.Split(s, ":")
	for i, p := range parts {
		p = strings.TrimLeft(p, "0")
		if p == "" {
			p = "0"
		}
		parts[i] = p
	}
	return strings.Join(parts, ":")
}
