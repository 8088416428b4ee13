package audit

// SetHookAfterLiveHeads sets the hook that runs between reading the live
// heads and reading the stream's end.
func SetHookAfterLiveHeads(f func()) { testHookAfterLiveHeads = f }
