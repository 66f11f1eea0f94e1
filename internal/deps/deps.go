//go:build tools

// Package deps pins modules used across the tree while packages are being built.
package deps

import (
	_ "github.com/cenkalti/backoff/v5"
	_ "github.com/miekg/dns"
	_ "github.com/pion/mdns/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.uber.org/goleak"
	_ "golang.org/x/net/ipv4"
	_ "golang.org/x/net/ipv6"
	_ "golang.org/x/sys/unix"
)
