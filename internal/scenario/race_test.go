//go:build linux && race

package scenario

const raceEnabled = true
