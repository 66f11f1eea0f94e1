package main

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// doctorSettings are the settings `macula doctor` shares with `macula run`:
// its flags of these names, and the variables they mirror, are checked by
// run's own parsers (runSettings) before the doctor checks anything, so a
// bad value exits 2 with a message naming the flag or variable and the
// value, as `macula run` does, instead of a FAIL line of the report. The
// doctor has no --ttl or --interval flag, but reads their variables.
var doctorSettings = []string{"multicast-addr", "port", "ttl", "interval", "interface", "secret", "listen"}

// checkDoctorFlags refuses bad values of the doctor's flags and variables
// (see doctorSettings), and an empty --cookie, as applySettings does for
// `macula run`. --listen-for and the file flags are checked where they are
// read.
func checkDoctorFlags(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range runSettings {
		if !slices.Contains(doctorSettings, s.flag) {
			continue
		}
		var v string
		if set[s.flag] {
			v = fs.Lookup(s.flag).Value.String()
		}
		if _, _, err := s.check(set[s.flag], v, getenv); err != nil {
			return err
		}
	}
	if set["cookie"] && strings.TrimSpace(fs.Lookup("cookie").Value.String()) == "" {
		return usageError{fmt.Errorf("--cookie %q: %w", fs.Lookup("cookie").Value.String(), errEmpty)}
	}
	return nil
}
