//go:build linux && !race

package scenario

const raceEnabled = false
