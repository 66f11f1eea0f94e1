package main

import (
	"errors"
	"fmt"

	"github.com/macula-io/cluster/internal/envx"
)

// readSecretFile is the library's reading of a secret file (the same rules
// as MACULA_COOKIE_FILE and MACULA_GOSSIP_SECRET_FILE in cluster.FromEnv).
func readSecretFile(path string) (string, error) { return envx.ReadSecretFile(path) }

// secretSource is a secret that can come from a flag, a file named by a
// flag, a variable or a file named by a variable (the command line wins,
// then the environment; within each, the value and the file exclude each
// other). Further variables (RELEASE_COOKIE, CLUSTER_SECRET) are left to
// cluster.FromEnv, after these.
type secretSource struct {
	flag, fileFlag, env, fileEnv string
}

var (
	cookieSource = secretSource{"cookie", "cookie-file", "MACULA_COOKIE", "MACULA_COOKIE_FILE"}
	secretSrc    = secretSource{"secret", "secret-file", "MACULA_GOSSIP_SECRET", "MACULA_GOSSIP_SECRET_FILE"}
)

var errBoth = errors.New("give one of them")

// resolve returns the raw secret from the file flag or the file variable,
// "" when neither is given (the value flag or variable, if any, is then
// used as it is). set tells which flags the command line gave.
func (s secretSource) resolve(set map[string]bool, file string, getenv func(string) string) (string, error) {
	if set[s.flag] && set[s.fileFlag] {
		return "", usageError{fmt.Errorf("--%s and --%s: %w", s.flag, s.fileFlag, errBoth)}
	}
	if set[s.fileFlag] {
		v, err := readSecretFile(file)
		if err != nil {
			return "", usageError{fmt.Errorf("--%s %q: %w", s.fileFlag, file, err)}
		}
		return v, nil
	}
	if set[s.flag] {
		return "", nil
	}
	path := getenv(s.fileEnv)
	if path == "" {
		return "", nil
	}
	if getenv(s.env) != "" {
		return "", usageError{fmt.Errorf("%s and %s are both set: %w", s.env, s.fileEnv, errBoth)}
	}
	v, err := readSecretFile(path)
	if err != nil {
		return "", usageError{fmt.Errorf("%s=%q: %w", s.fileEnv, path, err)}
	}
	return v, nil
}

// cmdlineSecretWarning is logged when a secret is given as a flag.
func cmdlineSecretWarning(flag, fileFlag, fileEnv string) string {
	return fmt.Sprintf("--%s on the command line is readable by every local user (ps, /proc/PID/cmdline); use --%s or %s instead",
		flag, fileFlag, fileEnv)
}
