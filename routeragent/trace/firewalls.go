package trace

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/bgplb/bgplb/routeragent/firewall"
)

// Firewalls is Firewall over both the iptables backends and native
// nftables: Read merges what each sees (a router may drop INVALID packets
// in several at once; each hooks the same packets in turn), and the
// counting rules go where the INVALID drop is: to a native table of
// trace's own when only native nftables drops, else to iptables' mangle
// table (the iptables tools on a router without them: Iptables.Default).
type Firewalls struct {
	Iptables *Iptables
	// Nft is nil when native nftables is not read (no nf_tables).
	Nft *Nft

	host Firewall
}

// Install chooses the host of the counting rules and installs them; the
// leftovers of killed traces are swept in both.
func (f *Firewalls) Install(ctx context.Context, scope Scope) error {
	f.host = f.Iptables
	if f.Nft != nil {
		native, err := f.nativeOnly()
		if err != nil {
			return err
		}
		if native {
			f.host = f.Nft
		} else if _, err := f.Nft.Sweep(ctx, alive); err != nil {
			return err
		}
	}
	if f.host != Firewall(f.Iptables) {
		if _, err := f.Iptables.Sweep(ctx, alive); err != nil {
			return err
		}
	}
	return f.host.Install(ctx, scope)
}

// nativeOnly: native nftables holds an INVALID drop and no iptables
// backend does.
func (f *Firewalls) nativeOnly() (bool, error) {
	rs, err := f.Nft.Ruleset()
	if unavailable(err) {
		f.Nft = nil // a kernel without nf_tables: nothing native to read
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("native nftables: %w", err)
	}
	if len(nftCounters(rs, "", "").Drops) == 0 {
		return false, nil
	}
	_, tables, err := f.Iptables.tables(firewall.TableName)
	if err != nil {
		return false, err
	}
	for _, t := range tables {
		if firewall.Analyze(t).Drop != nil {
			return false, nil
		}
	}
	return true, nil
}

func unavailable(err error) bool {
	return errors.Is(err, firewall.ErrUnavailable) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT)
}

// Remove removes the counting rules (and closes the native reader).
func (f *Firewalls) Remove(ctx context.Context) error {
	var err error
	if f.host != nil {
		err = f.host.Remove(ctx)
	}
	if f.Nft != nil && f.host != Firewall(f.Nft) {
		if rerr := f.Nft.Remove(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// Read merges the counters of both.
func (f *Firewalls) Read(ctx context.Context) (Counters, error) {
	c, err := f.Iptables.Read(ctx)
	if err != nil || f.Nft == nil {
		return c, err
	}
	n, err := f.Nft.Read(ctx)
	if err != nil {
		return Counters{}, fmt.Errorf("native nftables: %w", err)
	}
	c.Packets += n.Packets
	c.Invalid += n.Invalid
	c.Drops = append(c.Drops, n.Drops...)
	c.Exemptions = append(c.Exemptions, n.Exemptions...)
	return c, nil
}
