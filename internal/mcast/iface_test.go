package mcast

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

func names(ifs []Interface) []string {
	var out []string
	for _, ifi := range ifs {
		out = append(out, ifi.Name)
	}
	return out
}

func TestSelect(t *testing.T) {
	const (
		up  = net.FlagUp | net.FlagRunning
		mc  = net.FlagMulticast
		bc  = net.FlagBroadcast
		lop = net.FlagLoopback
	)
	mk := func(name string, flags net.Flags, addrs ...string) Interface {
		ifi := Interface{Interface: net.Interface{Name: name, Flags: flags}}
		for _, a := range addrs {
			ifi.Addrs = append(ifi.Addrs, netip.MustParsePrefix(a))
		}
		return ifi
	}
	all := []Interface{
		mk("lo", up|lop, "127.0.0.1/8", "::1/128"),
		mk("eth0", up|mc|bc, "10.0.0.5/24", "fe80::1/64"),
		mk("v6only", up|mc, "fe80::2/64"),
		mk("nocarrier", net.FlagUp|mc|bc, "10.1.0.1/24"), // up, not running
		mk("down", mc|bc, "10.2.0.1/24"),
		mk("ptp", up|mc, "10.3.0.1/32"), // multicast, no broadcast flag
	}
	for _, tc := range []struct {
		name    string
		want    Want
		use     []string
		missing []string
	}{
		{"default", Want{}, []string{"eth0", "v6only", "ptp"}, nil},
		{"default IPv4", Want{IPv4: true}, []string{"eth0", "ptp"}, nil},
		{"broadcast", Want{Broadcast: true, IPv4: true}, []string{"eth0"}, nil},
		{"named", Want{Names: []string{"lo", "nocarrier", "down", "gone0", "lo"}}, []string{"lo", "nocarrier"}, []string{"gone0"}},
		{"named ignores IPv4", Want{Names: []string{"v6only"}, IPv4: true}, []string{"v6only"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			use, missing := tc.want.Select(all)
			if !slices.Equal(names(use), tc.use) || !slices.Equal(missing, tc.missing) {
				t.Errorf("Select = %v, missing %v; want %v, missing %v", names(use), missing, tc.use, tc.missing)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	for _, tc := range []struct {
		addrs      []string
		bcast, src string // "" = zero Addr
		v4, v6     int
	}{
		{[]string{"10.0.0.5/24"}, "10.0.0.255", "10.0.0.5", 1, 0},
		{[]string{"10.0.0.9/32", "192.168.7.3/30"}, "192.168.7.3", "192.168.7.3", 2, 0},
		{[]string{"10.0.0.9/32", "10.0.0.10/31"}, "", "10.0.0.9", 2, 0},
		{[]string{"fe80::1/64", "172.16.0.1/12"}, "172.31.255.255", "172.16.0.1", 1, 1},
		{[]string{"0.0.0.1/0"}, "255.255.255.255", "0.0.0.1", 1, 0},
		{[]string{"fdca::1/64"}, "", "", 0, 1},
		{nil, "", "", 0, 0},
	} {
		ifi := Interface{}
		for _, a := range tc.addrs {
			ifi.Addrs = append(ifi.Addrs, netip.MustParsePrefix(a))
		}
		str := func(a netip.Addr) string {
			if !a.IsValid() {
				return ""
			}
			return a.String()
		}
		bcast, bsrc := ifi.Broadcast4()
		if str(bcast) != tc.bcast || (bcast.IsValid() && bsrc != ifi.Source4()) {
			t.Errorf("%v: Broadcast4 = %v, %v; want %q", tc.addrs, bcast, bsrc, tc.bcast)
		}
		if got := str(ifi.Source4()); got != tc.src {
			t.Errorf("%v: Source4 = %q, want %q", tc.addrs, got, tc.src)
		}
		if len(ifi.V4()) != tc.v4 || len(ifi.V6()) != tc.v6 {
			t.Errorf("%v: V4 %v V6 %v", tc.addrs, ifi.V4(), ifi.V6())
		}
	}
}

// TestList reads the host's interfaces; it sends nothing.
func TestList(t *testing.T) {
	all, err := List()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(all, func(ifi Interface) bool { return ifi.Flags&net.FlagLoopback != 0 })
	if i < 0 {
		t.Skip("no loopback interface")
	}
	lo := all[i]
	if !slices.Contains(lo.V4(), netip.MustParseAddr("127.0.0.1")) || lo.Source4() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("loopback %s addresses %v", lo.Name, lo.Addrs)
	}
	use, missing, err := Interfaces(Want{})
	if err != nil || len(missing) != 0 || slices.Contains(names(use), lo.Name) {
		t.Errorf("default selection %v, missing %v, err %v: want no loopback", names(use), missing, err)
	}
	use, missing, err = Interfaces(Want{Names: []string{lo.Name, "mcast-no-such0"}})
	if err != nil || !slices.Equal(names(use), []string{lo.Name}) || !slices.Equal(missing, []string{"mcast-no-such0"}) {
		t.Errorf("named selection %v, missing %v, err %v", names(use), missing, err)
	}
}
