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
