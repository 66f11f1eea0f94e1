// Package envx parses the value formats of Macula's environment variables,
// once for every package that reads them (cluster, gossip, dnsdisc, mdns,
// and the command's flags that mirror them).
package envx

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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

// MaxSecretFile bounds what a secret file may hold: a cookie or a keyring
// is a few hundred bytes; a larger file is a mistake (a wrong path).
const MaxSecretFile = 64 << 10

// ReadSecretFile reads a secret the way Docker and Kubernetes mount them
// (/run/secrets/NAME, a Secret volume): the whole file, without its
// trailing newline ("\n" or "\r\n", as echo and editors leave it). An
// unreadable, empty or oversized file is an error naming the file.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxSecretFile {
		return "", fmt.Errorf("%s: larger than %d bytes, not a secret", path, MaxSecretFile)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}
