//go:build !linux

package mcast

import (
	"errors"
	"os"
)

// subscribe: no change events are read here; the watcher polls.
func subscribe() (*os.File, error) { return nil, errors.ErrUnsupported }

// readEvents is never called where subscribe fails.
func readEvents(*os.File, chan<- struct{}) {}
