package mesh

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/macula-io/cluster/internal/envx"
)

// CookieFile is the name of the cookie file in the home directory.
const CookieFile = ".macula.cookie"

// maxCookieFile bounds how much of a cookie file is read.
const maxCookieFile = 4096

// ResolveCookie finds the cluster cookie, in order:
//
//  1. the MACULA_COOKIE environment variable (source "MACULA_COOKIE");
//  2. the file named by MACULA_COOKIE_FILE (source: that path), the
//     Docker/Kubernetes secrets convention: its trailing newline is
//     trimmed; unreadable, empty or over 64 KiB is an error naming it;
//  3. RELEASE_COOKIE (source "RELEASE_COOKIE"), as Elixir releases set it;
//  4. the file home/.macula.cookie (source: the file's path). When it does
//     not exist it is created, mode 0600, holding 32 random bytes in base32
//     (52 characters), so every node started by one user on one machine
//     shares a strong cookie without configuration.
//
// Values are trimmed of surrounding white space; an empty variable counts as
// unset. getenv nil means os.Getenv; home "" means os.UserHomeDir().
//
// An empty (or white-space-only) cookie file is an error naming the file. A
// cookie file readable or writable by group or others is still used (it is
// the operator's file; refusing it would stop a cluster on a permissions
// slip), but it weakens the cookie: fix it with chmod 600. Callers that want
// to warn can stat the returned source path.
func ResolveCookie(getenv func(string) string, home string) (cookie, source string, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if c := strings.TrimSpace(getenv("MACULA_COOKIE")); c != "" {
		return c, "MACULA_COOKIE", nil
	}
	if f := getenv("MACULA_COOKIE_FILE"); f != "" {
		c, err := envx.ReadSecretFile(f)
		if err != nil {
			return "", "", fmt.Errorf("mesh: cookie: MACULA_COOKIE_FILE: %w", err)
		}
		return c, f, nil
	}
	if c := strings.TrimSpace(getenv("RELEASE_COOKIE")); c != "" {
		return c, "RELEASE_COOKIE", nil
	}
	if home == "" {
		if home, err = os.UserHomeDir(); err != nil {
			return "", "", fmt.Errorf("mesh: cookie: no MACULA_COOKIE, RELEASE_COOKIE or home directory: %w", err)
		}
	}
	path := filepath.Join(home, CookieFile)
	c, err := readCookie(path)
	if errors.Is(err, fs.ErrNotExist) {
		c, err = createCookie(path)
	}
	if err != nil {
		return "", "", err
	}
	return c, path, nil
}

func readCookie(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("mesh: cookie file %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCookieFile+1))
	if err != nil {
		return "", fmt.Errorf("mesh: cookie file %s: %w", path, err)
	}
	if len(b) > maxCookieFile {
		return "", fmt.Errorf("mesh: cookie file %s: longer than %d bytes", path, maxCookieFile)
	}
	c := strings.TrimSpace(string(b))
	if c == "" {
		return "", fmt.Errorf("mesh: cookie file %s: %w", path, ErrNoCookie)
	}
	return c, nil
}

// createCookie writes a random cookie to path atomically: a temporary file
// is completed first and then hard-linked into place, so a concurrent
// reader never sees a partial file and two concurrent creators agree.
func createCookie(path string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("mesh: cookie: %w", err)
	}
	c := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
	tmp, err := os.CreateTemp(filepath.Dir(path), CookieFile+".tmp*")
	if err != nil {
		return "", fmt.Errorf("mesh: create cookie file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("mesh: create cookie file %s: %w", path, err)
	}
	_, werr := tmp.WriteString(c + "\n")
	if err := errors.Join(werr, tmp.Close()); err != nil {
		return "", fmt.Errorf("mesh: create cookie file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readCookie(path)
		}
		return "", fmt.Errorf("mesh: create cookie file %s: %w", path, err)
	}
	return c, nil
}
