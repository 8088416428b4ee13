// Package wait holds the one way flashgate's loops pause: for a duration or
// until their context ends, whichever comes first.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends; it returns ctx.Err() in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
