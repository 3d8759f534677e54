package callstream

import "context"

// Watched reports whether the channel of the call of ctx is being watched
// for the client's cancel.
func Watched(ctx context.Context) bool {
	w := watchOf(ctx)
	return w != nil && w.started
}
