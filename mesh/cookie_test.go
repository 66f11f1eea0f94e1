package mesh

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func env(kv ...string) func(string) string {
	return func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == k {
				return kv[i+1]
			}
		}
		return ""
	}
}

func TestResolveCookie(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, CookieFile)
	for _, tc := range []struct {
		name           string
		getenv         func(string) string
		cookie, source string
	}{
		{"MACULA_COOKIE first", env("MACULA_COOKIE", "m", "RELEASE_COOKIE", "r"), "m", "MACULA_COOKIE"},
		{"RELEASE_COOKIE", env("RELEASE_COOKIE", " r\n"), "r", "RELEASE_COOKIE"},
		{"blank env is unset", env("MACULA_COOKIE", "  ", "RELEASE_COOKIE", "r"), "r", "RELEASE_COOKIE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, src, err := ResolveCookie(tc.getenv, home)
			if err != nil || c != tc.cookie || src != tc.source {
				t.Fatalf("ResolveCookie = %q, %q, %v", c, src, err)
			}
		})
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("cookie file created although the environment had a cookie")
	}

	// Missing file: created, 0600, 52 base32 characters, stable.
	c1, src, err := ResolveCookie(env(), home)
	if err != nil || src != path || len(c1) != 52 || strings.Trim(c1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != "" {
		t.Fatalf("created cookie %q, %q, %v", c1, src, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cookie file mode %v, %v", fi.Mode(), err)
	}
	c2, _, err := ResolveCookie(env(), home)
	if err != nil || c2 != c1 {
		t.Fatalf("second read %q, %v; want %q", c2, err, c1)
	}
	if ents, _ := os.ReadDir(home); len(ents) != 1 {
		t.Fatalf("left files behind: %v", ents)
	}

	// Existing file with loose permissions: still used.
	os.WriteFile(path, []byte("  loose\n"), 0o644)
	os.Chmod(path, 0o644)
	if c, _, err := ResolveCookie(env(), home); err != nil || c != "loose" {
		t.Fatalf("loose file: %q, %v", c, err)
	}

	// Empty file: an error naming the file.
	os.WriteFile(path, []byte(" \n"), 0o600)
	if _, _, err := ResolveCookie(env(), home); err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, ErrNoCookie) {
		t.Fatalf("empty file: %v", err)
	}

	// Unreadable home: an error naming the file.
	if _, _, err := ResolveCookie(env(), filepath.Join(home, "missing", "dir")); err == nil || !strings.Contains(err.Error(), CookieFile) {
		t.Fatalf("missing home: %v", err)
	}
}

func TestResolveCookieConcurrentCreate(t *testing.T) {
	home := t.TempDir()
	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := ResolveCookie(env(), home)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	for _, c := range got {
		if c != got[0] || c == "" {
			t.Fatalf("concurrent creators disagree: %q", got)
		}
	}
}
