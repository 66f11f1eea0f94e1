package mcast

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Interface is a network interface with its addresses.
type Interface struct {
	net.Interface
	// Addrs are the interface's addresses with their prefix lengths, in the
	// order the OS lists them; IPv4 addresses unmapped.
	Addrs []netip.Prefix
}

// V4 returns the IPv4 addresses, nil when there are none.
func (ifi Interface) V4() []netip.Addr { return ifi.addrs(true) }

// V6 returns the IPv6 addresses (link-local ones included), nil when there
// are none.
func (ifi Interface) V6() []netip.Addr { return ifi.addrs(false) }

func (ifi Interface) addrs(v4 bool) []netip.Addr {
	var out []netip.Addr
	for _, p := range ifi.Addrs {
		if p.Addr().Is4() == v4 {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Broadcast4 returns the IPv4 broadcast address of the first IPv4 address
// whose prefix has one (/30 or shorter), and that address; zero values
// when there is none (/31, /32, or no IPv4 address).
func (ifi Interface) Broadcast4() (bcast, src netip.Addr) {
	for _, p := range ifi.Addrs {
		if !p.Addr().Is4() || p.Bits() < 0 || p.Bits() > 30 {
			continue
		}
		a := p.Addr().As4()
		host := uint32(uint64(1)<<(32-p.Bits()) - 1)
		binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])|host)
		return netip.AddrFrom4(a), p.Addr()
	}
	return netip.Addr{}, netip.Addr{}
}

// Source4 returns the IPv4 address to send from: the one Broadcast4 uses
// when there is one, else the first IPv4 address, else the zero Addr.
func (ifi Interface) Source4() netip.Addr {
	if _, src := ifi.Broadcast4(); src.IsValid() {
		return src
	}
	if v4 := ifi.V4(); len(v4) > 0 {
		return v4[0]
	}
	return netip.Addr{}
}

// List returns every interface of the host (of the network namespace of
// the calling thread) with its addresses.
func List() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("mcast: list interfaces: %w", err)
	}
	out := make([]Interface, len(ifs))
	for i := range ifs {
		out[i] = Interface{Interface: ifs[i], Addrs: prefixes(&ifs[i])}
	}
	return out, nil
}

// prefixes returns the addresses of ifi; none when it vanished meanwhile.
func prefixes(ifi *net.Interface) []netip.Prefix {
	as, _ := ifi.Addrs()
	var out []netip.Prefix
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, bits := ipn.Mask.Size()
		if ip.Is4In6() && bits == 128 {
			ones -= 96
		}
		ip = ip.Unmap()
		if ones < 0 || ones > ip.BitLen() {
			ones = ip.BitLen() // a non-canonical mask: keep the address
		}
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out
}

// Want says which interfaces to use.
type Want struct {
	// Names, when not empty, selects exactly these interfaces, in this
	// order, each once: those that are up, whatever their other flags (so
	// "lo" can be named). Empty = the default selection: every interface
	// that is up, running, multicast-capable (broadcast-capable with
	// Broadcast) and not loopback.
	Names []string
	// Broadcast makes the default selection require the broadcast flag
	// instead of the multicast one. false = multicast.
	Broadcast bool
	// IPv4 makes the default selection require an IPv4 address (to send
	// IPv4 packets from). false = any address or none.
	IPv4 bool
}

// Select returns the interfaces of all that w wants, and the names in
// w.Names that are not in all. A named interface that exists but is down
// is in neither list.
func (w Want) Select(all []Interface) (use []Interface, missing []string) {
	if len(w.Names) > 0 {
		for i, name := range w.Names {
			if slices.Contains(w.Names[:i], name) {
				continue
			}
			j := slices.IndexFunc(all, func(ifi Interface) bool { return ifi.Name == name })
			switch {
			case j < 0:
				missing = append(missing, name)
			case all[j].Flags&net.FlagUp != 0:
				use = append(use, all[j])
			}
		}
		return use, missing
	}
	need := net.FlagUp | net.FlagRunning | net.FlagMulticast
	if w.Broadcast {
		need = net.FlagUp | net.FlagRunning | net.FlagBroadcast
	}
	for _, ifi := range all {
		if ifi.Flags&need != need || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		if w.IPv4 && !ifi.Source4().IsValid() {
			continue
		}
		use = append(use, ifi)
	}
	return use, missing
}

// Interfaces is List followed by w.Select.
func Interfaces(w Want) (use []Interface, missing []string, err error) {
	all, err := List()
	if err != nil {
		return nil, nil, err
	}
	use, missing = w.Select(all)
	return use, missing, nil
}
