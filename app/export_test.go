package app

import "net/http"

// Crash stops the process as abruptly as one process can stop a part of
// itself, for the tests of what the other processes do then: the HTTP
// listener and every connection on it close at once (answers not yet
// written are lost), and the NATS connection closes without draining, so
// nothing more goes out — no lease release, no last batch, no goodbye. The
// writers' and the front's next calls fail with a closed connection.
// Shutdown afterwards releases what is left in the process.
func (a *App) Crash() {
	_ = a.srv.Close()
	a.nc.Close()
}

// Handler is the service's HTTP handler, for the benchmarks that drive it
// without a network.
func (a *App) Handler() http.Handler { return a.srv.Handler }

// Asleep names the sales whose writer here retired idle (--writer-idle),
// as the manager knows it now (readiness caches its answer for a second).
func (a *App) Asleep() []string { return a.manager.Asleep() }
