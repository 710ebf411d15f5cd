package bfd

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// marshalInto writes what the library's MarshalBinary writes, and the
// library's UnmarshalBinary reads it back.
func TestMarshalIntoMatchesLibrary(t *testing.T) {
	headers := []bfd.BFDHeader{
		{Version: 1, State: StateDown, DetectTimeMultiplier: 3, MyDiscriminator: 1, DesiredMinTxInterval: 1000000, RequiredMinRxInterval: 300000},
		{Version: 1, Diagnostic: bfd.DiagnosticControlDetectionTimeExpired, State: StateUp, Poll: true, DetectTimeMultiplier: 255,
			MyDiscriminator: 0xffffffff, YourDiscriminator: 0x80000001, DesiredMinTxInterval: 0xffffffff, RequiredMinRxInterval: 0},
		{Version: 1, Diagnostic: bfd.DiagnosticReverseConcatenatedPathDown, State: StateInit, Final: true, DetectTimeMultiplier: 1,
			MyDiscriminator: 42, YourDiscriminator: 43, DesiredMinTxInterval: 50000, RequiredMinRxInterval: 50000},
		{Version: 1, Diagnostic: bfd.DiagnosticAdministrativelyDown, State: StateAdminDown, DetectTimeMultiplier: 3, MyDiscriminator: 9},
	}
	for _, h := range headers {
		var b [controlLen]byte
		marshalInto(&b, &h)
		lib, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(lib, b[:]); diff != "" {
			t.Errorf("bytes of %+v (-library +ours):\n%s", h, diff)
		}
		var back bfd.BFDHeader
		if err := back.UnmarshalBinary(b[:]); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(h, back); diff != "" {
			t.Errorf("round trip (-sent +decoded):\n%s", diff)
		}
	}
}

func TestDecodeChecks(t *testing.T) {
	valid := func() []byte {
		var b [controlLen]byte
		marshalInto(&b, &bfd.BFDHeader{Version: 1, State: StateUp, DetectTimeMultiplier: 3, MyDiscriminator: 1,
			YourDiscriminator: 2, DesiredMinTxInterval: 300000, RequiredMinRxInterval: 300000})
		return b[:]
	}
	tests := []struct {
		name string
		mod  func(b []byte) []byte
		want error
	}{
		{"valid", func(b []byte) []byte { return b }, nil},
		{"too short", func(b []byte) []byte { return b[:20] }, bfd.ErrInvalidPacketLength},
		{"length field disagrees", func(b []byte) []byte { b[3] = 30; return b }, bfd.ErrInvalidHeader},
		{"version 0", func(b []byte) []byte { b[0] &^= 0xe0; return b }, errVersion},
		{"authentication", func(b []byte) []byte { b[1] |= 0x04; return b }, errAuth},
		{"multipoint", func(b []byte) []byte { b[1] |= 0x01; return b }, errMultipoint},
		{"demand while Up", func(b []byte) []byte { b[1] |= 0x02; return b }, errDemand},
		{"detect mult 0", func(b []byte) []byte { b[2] = 0; return b }, errDetectMult},
		{"my discriminator 0", func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }, errMyDiscr},
		{"your discriminator 0 while Up", func(b []byte) []byte { copy(b[8:12], []byte{0, 0, 0, 0}); return b }, errYourDiscr},
		{"your discriminator 0 while Down", func(b []byte) []byte {
			copy(b[8:12], []byte{0, 0, 0, 0})
			b[1] = byte(StateDown) << 6
			return b
		}, nil},
	}
	for _, tt := range tests {
		var h bfd.BFDHeader
		if err := decode(tt.mod(valid()), &h); !errors.Is(err, tt.want) {
			t.Errorf("%s: decode = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestTTLFromOOB(t *testing.T) {
	// Control messages as the kernel writes them on 64-bit Linux.
	cmsg := func(level, typ int32, val int32) []byte {
		b := make([]byte, 24)
		binary.NativeEndian.PutUint64(b[0:], 20)
		binary.NativeEndian.PutUint32(b[8:], uint32(level))
		binary.NativeEndian.PutUint32(b[12:], uint32(typ))
		binary.NativeEndian.PutUint32(b[16:], uint32(val))
		return b
	}
	tests := []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, -1},
		{"IP_TTL", cmsg(0, 2, 255), 255},
		{"IPV6_HOPLIMIT", cmsg(41, 52, 254), 254},
		{"another message first", append(cmsg(0, 8, 1), cmsg(0, 2, 64)...), 64},
		{"truncated", cmsg(0, 2, 255)[:12], -1},
	}
	for _, tt := range tests {
		if got := ttlFromOOB(tt.oob); got != tt.want {
			t.Errorf("%s: ttlFromOOB = %d, want %d", tt.name, got, tt.want)
		}
	}
}
