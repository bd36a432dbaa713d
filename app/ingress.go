package app

// Ingress modes (Config.Ingress, Doc.Ingress), as Container Apps'
// ingress.external.
const (
	IngressExternal = "external"
	IngressInternal = "internal"
)

// Internal says whether the app's ingress is internal: it is reachable only
// from other apps and sessions (through their sandboxes' tunnels), and the
// public listeners answer for it as for an app that does not exist.
func (a *App) Internal() bool { return a.internal.Load() }
