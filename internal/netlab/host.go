//go:build linux

package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
)

// Command returns a command that runs name inside the host's namespace
// ("ip netns exec NS name args..."). It gets SIGKILL if the calling process
// dies (SysProcAttr.Pdeathsig; replace SysProcAttr to change that). The lab
// does not track it, but Close kills it if it still runs.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// AddrPort returns h.IP:port.
func (h *Host) AddrPort(port uint16) netip.AddrPort { return netip.AddrPortFrom(h.IP, port) }

// Cut takes the host's cable out: its switch-side veth goes down, so every
// packet to or from the host is lost silently (no FIN, no RST). The host sees
// its eth0 lose carrier, as with a real cable. In an Impair lab the
// forwarder drops every frame instead, those already queued included, and
// the host's eth0 loses carrier all the same.
func (h *Host) Cut() error { return h.setPort("down") }

// Restore undoes Cut.
func (h *Host) Restore() error { return h.setPort("up") }

func (h *Host) setPort(state string) error {
	if h.lab.isClosed() {
		return ErrClosed
	}
	if h.fwd != nil {
		// Drop first, then take the carrier away (as a veth whose peer
		// goes down); on Restore the carrier comes back first.
		cut := state == "down"
		if cut {
			h.fwd.setCut(true)
		}
		if err := setCarrier(h.fwd.host, !cut); err != nil {
			return fmt.Errorf("netlab: %s: link %s: carrier: %w", h.NS, state, err)
		}
		h.fwd.setCut(cut)
		return nil
	}
	if err := run(context.Background(), "", "ip", "-n", h.lab.sw, "link", "set", h.port, state); err != nil {
		return fmt.Errorf("netlab: %s: link %s: %w", h.NS, state, err)
	}
	return nil
}

// Netem sets the netem qdisc on the host's eth0 (egress) to spec, e.g.
// "loss 20% delay 10ms 50ms": tc qdisc replace dev eth0 root netem SPEC.
// It returns an error wrapping ErrNetemUnsupported when the kernel has no
// netem (see NetemSupported; Loss works without it).
//
// In an Impair lab (Lab.Impairable) no qdisc is involved: spec is parsed by
// ParseNetem (loss, delay with jitter, limit) and set as the host's egress
// impairment (ImpairEgress), replacing the previous one, so it works on
// kernels without netem; other netem features return an error wrapping
// errors.ErrUnsupported.
func (h *Host) Netem(spec string) error {
	if h.lab.isClosed() {
		return ErrClosed
	}
	if h.fwd != nil {
		im, err := ParseNetem(spec)
		if err != nil {
			return fmt.Errorf("netlab: %s: %w", h.NS, err)
		}
		return h.ImpairEgress(im)
	}
	args := append([]string{"-n", h.NS, "qdisc", "replace", "dev", h.Iface, "root", "netem"}, strings.Fields(spec)...)
	if err := run(context.Background(), "", "tc", args...); err != nil {
		if strings.Contains(err.Error(), "qdisc kind is unknown") {
			return fmt.Errorf("netlab: %s: netem %q: %w", h.NS, spec, ErrNetemUnsupported)
		}
		return fmt.Errorf("netlab: %s: netem %q: %w", h.NS, spec, err)
	}
	return nil
}

// ClearNetem removes the qdisc Netem set; without one it does nothing. In
// an Impair lab it clears the host's egress impairment.
func (h *Host) ClearNetem() error {
	if h.lab.isClosed() {
		return ErrClosed
	}
	if h.fwd != nil {
		return h.ImpairEgress(Impairment{})
	}
	out, err := output(context.Background(), "tc", "-n", h.NS, "qdisc", "show", "dev", h.Iface, "root")
	if err != nil {
		return fmt.Errorf("netlab: %s: clear netem: %w", h.NS, err)
	}
	if !strings.Contains(string(out), "netem") {
		return nil
	}
	if err := run(context.Background(), "", "tc", "-n", h.NS, "qdisc", "del", "dev", h.Iface, "root"); err != nil {
		return fmt.Errorf("netlab: %s: clear netem: %w", h.NS, err)
	}
	return nil
}

// Qdisc returns "tc qdisc show dev eth0" inside the host (for checks and
// failure messages).
func (h *Host) Qdisc() (string, error) {
	out, err := output(context.Background(), "tc", "-n", h.NS, "qdisc", "show", "dev", h.Iface)
	return string(out), err
}

// Loss drops percent (0..100) of the frames the host sends, at random,
// silently, like "netem loss PERCENT%" but without needing netem: an
// nftables netdev rule on the host's switch-side veth (or TAP in an Impair
// lab; needs the nft command). Loss(0) removes the rule. It is independent of Netem, Cut and
// Partition.
func (h *Host) Loss(percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netlab: %s: loss %d%%: want 0..100", h.NS, percent)
	}
	if h.lab.isClosed() {
		return ErrClosed
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("netlab: %s: loss needs nft: %w", h.NS, errors.Join(err, errors.ErrUnsupported))
	}
	table := "netlab_" + h.port
	// Declaring then deleting makes the script work whether or not the
	// table exists.
	script := fmt.Sprintf("table netdev %s {}\ndelete table netdev %s\n", table, table)
	if percent > 0 {
		rule := fmt.Sprintf("numgen random mod 100 < %d drop", percent)
		if percent == 100 {
			rule = "drop"
		}
		script += fmt.Sprintf("table netdev %s {\n chain in {\n  type filter hook ingress device %q priority 0; policy accept;\n  %s\n }\n}\n", table, h.port, rule)
	}
	if err := run(context.Background(), script, "ip", "netns", "exec", h.lab.sw, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("netlab: %s: loss %d%%: %w", h.NS, percent, err)
	}
	return nil
}

// Counters are the host's eth0 interface counters.
type Counters struct {
	RxBytes, RxPackets, RxDropped uint64
	TxBytes, TxPackets, TxDropped uint64
}

// Counters reads the host's eth0 counters (ip -s -j link show).
func (h *Host) Counters() (Counters, error) {
	out, err := output(context.Background(), "ip", "-n", h.NS, "-s", "-j", "link", "show", "dev", h.Iface)
	if err != nil {
		return Counters{}, fmt.Errorf("netlab: %s: counters: %w", h.NS, err)
	}
	var links []struct {
		Stats struct {
			Rx struct{ Bytes, Packets, Dropped uint64 }
			Tx struct{ Bytes, Packets, Dropped uint64 }
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return Counters{}, fmt.Errorf("netlab: %s: counters: parse %q: %v", h.NS, out, err)
	}
	s := links[0].Stats
	return Counters{
		RxBytes: s.Rx.Bytes, RxPackets: s.Rx.Packets, RxDropped: s.Rx.Dropped,
		TxBytes: s.Tx.Bytes, TxPackets: s.Tx.Packets, TxDropped: s.Tx.Dropped,
	}, nil
}
