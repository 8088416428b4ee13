package audit

import "database/sql"

// SetHookAfterLiveHeads sets the hook that runs between reading the live
// heads and reading the stream's end.
func SetHookAfterLiveHeads(f func()) { testHookAfterLiveHeads = f }

// SetHookAfterReplay sets the hook that runs between the replay and the
// checks of the replayed views.
func SetHookAfterReplay(f func(views *sql.DB)) { testHookAfterReplay = f }
