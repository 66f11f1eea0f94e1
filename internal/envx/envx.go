// Package envx parses the value formats of Macula's environment variables,
// once for every package that reads them (cluster, gossip, dnsdisc, mdns,
// and the command's flags that mirror them).
package envx

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a duration as Macula's environment writes it: a plain
// integer is milliseconds ("1500"), anything else is a Go duration ("1.5s").
// Spaces around it are ignored. It must be positive and fit in a
// time.Duration.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return 0, errors.New("want a positive number of milliseconds (1500) or a Go duration (1.5s)")
		}
		if n > math.MaxInt64/int64(time.Millisecond) {
			return 0, errors.New("too large")
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive number of milliseconds (1500) or a Go duration (1.5s)")
	}
	return d, nil
}

// SplitList splits a comma-separated list and trims spaces around each
// entry. It returns the non-empty entries; ok is false when an entry was
// empty ("a,,b", "a, "), so a caller can either reject such a list or take
// the entries as they are.
func SplitList(s string) (list []string, ok bool) {
	ok = true
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			list = append(list, f)
		} else if s != "" {
			ok = false
		}
	}
	return list, ok
}
