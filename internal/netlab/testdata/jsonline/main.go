// Command jsonline is a stand-in for "macula run --json" in netlab's own
// tests: it prints a ready line with its addresses, then a bye line and exits
// 0 on SIGTERM.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var addrs []string
	if ifi, err := net.InterfaceByName("eth0"); err == nil {
		as, _ := ifi.Addrs()
		for _, a := range as {
			addrs = append(addrs, a.String())
		}
	}
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"event": "ready", "node": "jsonline@" + os.Getenv("NODE_HOST"), "addrs": addrs})
	fmt.Fprintln(os.Stderr, "jsonline: waiting for a signal")
	<-sig
	_ = out.Encode(map[string]any{"event": "bye"})
}
