package doctor

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseConntrackStat: any text given as /proc/net/stat/nf_conntrack
// (the per-CPU table behind `conntrack -S`) never panics the parser; and a
// CPU row appended with invalid=v (every other column 0, the kernel's %08x
// hex) adds exactly v to the sum of a table that parsed, keeps an error an
// error, and is refused when the header has no invalid column. Seeds:
// testdata/fuzz/FuzzParseConntrackStat, among them the real file of a
// network namespace and of the host (kernel 6.x column set).
func FuzzParseConntrackStat(f *testing.F) {
	header := "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart"
	row := "00000000  00000000 00000000 00000000 0000002a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000"
	for _, s := range []string{
		header + "\n" + row + "\n" + row + "\n",
		header,
		"entries searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error expect_new expect_create expect_delete search_restart\n0000001e 00000000 00000000 00000000 ffffffff 00000000\n",
		"entries found\n00000000 00000000\n",
		header + "\nzz zz zz zz zz\n",
		header + "\n00000000 00000000\n",
		"invalid invalid\n1 2\n",
		"",
	} {
		f.Add(s, uint64(42))
	}
	f.Fuzz(func(t *testing.T, s string, v uint64) {
		sum, ok, err := parseConntrackStat(s)
		if err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
		if err != nil && (sum != 0 || ok) {
			t.Fatalf("error %v with sum %d ok %v", err, sum, ok)
		}
		trimmed := strings.TrimSpace(s)
		if trimmed == "" {
			if ok || err != nil {
				t.Fatalf("empty input: %d %v %v", sum, ok, err)
			}
			return
		}
		head := strings.Fields(strings.Split(trimmed, "\n")[0])
		col := -1
		for i, h := range head {
			if h == "invalid" {
				col = i
			}
		}
		cells := make([]string, len(head))
		for i := range cells {
			cells[i] = "00000000"
		}
		if col >= 0 {
			cells[col] = strconv.FormatUint(v, 16)
		}
		sum2, ok2, err2 := parseConntrackStat(s + "\n" + strings.Join(cells, " ") + "\n")
		switch {
		case col < 0:
			if err2 == nil || !strings.Contains(err2.Error(), "no invalid column") {
				t.Fatalf("header %q without invalid column: %d %v %v", head, sum2, ok2, err2)
			}
		case err != nil:
			if err2 == nil {
				t.Fatalf("an appended row cleared the error %v", err)
			}
		default:
			if err2 != nil || !ok2 || sum2 != sum+v {
				t.Fatalf("appended invalid=%d to sum %d: got %d %v %v", v, sum, sum2, ok2, err2)
			}
		}
	})
}
