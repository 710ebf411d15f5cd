package bfd

import (
	"encoding/binary"
	"errors"

	"github.com/osrg/gobgp/v4/pkg/packet/bfd"
)

// The wire format comes from GoBGP v4's codec (pkg/packet/bfd). Its
// UnmarshalBinary fills a caller-owned BFDHeader and does not allocate, so
// the receive path uses it as it is. Its MarshalBinary allocates a new
// 24-byte slice for every packet (`make([]byte, packetSizeMin)`, returned,
// so it escapes) and the package offers no append- or buffer-taking
// encoder; marshalInto is the one allocation-free replacement, the same
// 24 bytes written into the session's reused buffer, and its tests check it
// byte for byte against MarshalBinary and round trip through
// UnmarshalBinary.

// controlLen is the length of a control packet without authentication
// (RFC 5880 section 4.1): we never send the A bit, so always 24.
const controlLen = 24

// marshalInto encodes h into b, which must hold controlLen bytes, exactly
// as bfd.BFDHeader.MarshalBinary does. h comes from fsm.header, whose
// fields are always in range.
func marshalInto(b *[controlLen]byte, h *bfd.BFDHeader) {
	b[0] = h.Version<<5 | byte(h.Diagnostic)&0x1f
	b[1] = byte(h.State)<<6 | bit(h.Poll)<<5 | bit(h.Final)<<4
	b[2] = h.DetectTimeMultiplier
	b[3] = controlLen
	binary.BigEndian.PutUint32(b[4:], h.MyDiscriminator)
	binary.BigEndian.PutUint32(b[8:], h.YourDiscriminator)
	binary.BigEndian.PutUint32(b[12:], h.DesiredMinTxInterval)
	binary.BigEndian.PutUint32(b[16:], h.RequiredMinRxInterval)
	// Required Min Echo RX Interval: 0, we do not take echo packets.
	binary.BigEndian.PutUint32(b[20:], 0)
}

func bit(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// Reasons a received packet is discarded (RFC 5880 6.8.6). They are fixed
// values so that the receive path does not allocate an error per packet.
var (
	errVersion    = errors.New("bfd: version is not 1")
	errAuth       = errors.New("bfd: authentication present (not supported)")
	errMultipoint = errors.New("bfd: multipoint bit set")
	errDetectMult = errors.New("bfd: detect mult is zero")
	errMyDiscr    = errors.New("bfd: my discriminator is zero")
	errYourDiscr  = errors.New("bfd: your discriminator is zero while state is not Down or AdminDown")
	errDemand     = errors.New("bfd: demand mode requested (not supported)")
)

// decode parses and checks one received control packet. It uses the
// library's UnmarshalBinary for the fields and checks itself what that
// ignores: the A, D and M bits (RFC 5880 6.8.6; we implement neither
// authentication nor demand mode, and both MUST be discarded then).
func decode(b []byte, h *bfd.BFDHeader) error {
	if err := h.UnmarshalBinary(b); err != nil {
		// The library's sentinel errors, returned as they are: wrapping
		// would allocate per malformed packet.
		return err
	}
	switch {
	case h.Version != 1:
		return errVersion
	case b[1]&0x04 != 0: // A
		return errAuth
	case b[1]&0x01 != 0: // M
		return errMultipoint
	case h.DetectTimeMultiplier == 0:
		return errDetectMult
	case h.MyDiscriminator == 0:
		return errMyDiscr
	case h.YourDiscriminator == 0 && h.State != StateDown && h.State != StateAdminDown:
		return errYourDiscr
	case b[1]&0x02 != 0 && h.State == StateUp: // D, only meaningful when both are Up
		return errDemand
	}
	return nil
}
