//go:build !unix

package loadgen

import "time"

// processCPU is unknown here: the report shows 0.
func processCPU() time.Duration { return 0 }
