//go:build linux

package netlab_test

import (
	"context"
	"fmt"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// A bench-style lab without a testing.TB: the caller closes it.
func ExampleNewLab() {
	lab, err := netlab.NewLab(netlab.Options{Hosts: 3, Name: "bench"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lab.Close()

	h := lab.Hosts[0]
	p, err := h.Start(context.Background(), []string{"MACULA_GOSSIP_IF=eth0"}, "/path/to/macula", "run", "--json")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ready, err := p.WaitFor(ctx, func(l netlab.Line) bool { return l.Event() == "ready" })
	fmt.Println(ready.Node(), err)
	_ = lab.Hosts[2].Cut()
	_ = lab.Partition([]int{0}, []int{1, 2})
	_ = lab.Heal()
	_ = p.Stop()
}

// Loss and jitter on every host of a lab, on a kernel without netem: an
// Impair lab links the hosts through a userspace forwarder.
func ExampleHost_Impair() {
	lab, err := netlab.NewLab(netlab.Options{Hosts: 3, Impair: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lab.Close()

	// Like "tc qdisc add dev eth0 root netem loss 20% delay 0ms 50ms" on
	// every host: each frame is impaired once, by its sender.
	for _, h := range lab.Hosts {
		if err := h.Netem("loss 20% delay 0ms 50ms"); err != nil {
			fmt.Println(err)
			return
		}
	}
	time.Sleep(60 * time.Second)
	for _, h := range lab.Hosts {
		st := h.ImpairStats()
		fmt.Println(h.NS, st.Egress.Forwarded, st.Egress.DroppedLoss)
		_ = h.ClearNetem()
	}

	// Both directions of one host: its round trips take 200 ms more.
	_ = lab.Hosts[0].Impair(netlab.Impairment{Delay: 100 * time.Millisecond})
	_ = lab.Hosts[0].ClearImpair()
}
