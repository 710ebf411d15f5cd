package cli

import (
	"bytes"
	"strings"
	"testing"
)

// check-config prints the BFD timers in force for each entry that runs
// BFD (defaults filled), and nothing about entries that do not.
func TestCheckConfigPrintsBFD(t *testing.T) {
	p := writeConfig(t, `asn: 64500
routerID: 192.168.2.1
neighbors:
  - {prefix: 192.168.2.0/24, asn: 64512, allowUnauthenticated: true, bfd: {enabled: true}}
  - {address: 192.168.3.7, asn: 64513, bfd: {enabled: true, receiveInterval: 100ms, detectMultiplier: 5}}
  - {address: 192.168.3.8, asn: 64513, bfd: {enabled: false}}
serviceSubnets: [192.168.254.0/24]
lanInterfaces: [lan0]
`)
	var out, errb bytes.Buffer
	if code := Main([]string{"check-config", "--config", p}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"bfd (the speakers must run BFD too):\n" +
			"  neighbors[0] (192.168.2.0/24): receiveInterval 300ms, transmitInterval 300ms, detectMultiplier 3\n" +
			"  neighbors[1] (192.168.3.7): receiveInterval 100ms, transmitInterval 300ms, detectMultiplier 5\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "neighbors[2] (192.168.3.8): receive") {
		t.Errorf("disabled entry printed:\n%s", out.String())
	}
}
