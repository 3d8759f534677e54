package hostexec

import (
	"os"
	"os/signal"
	"syscall"
)

// inheritedIgnored are the signals a Go program leaves ignored when it
// was started with them ignored (nohup ignores SIGHUP; a shell's
// background job ignores SIGINT). The runtime installs its own handler for
// every other signal. An ignored signal stays ignored across exec, and a
// shell cannot trap a signal that was ignored when it started. So a
// program run through a server started that way could neither trap these
// signals nor be stopped by them: rexec's signals would no longer act as
// if the program ran locally.
var inheritedIgnored = []os.Signal{syscall.SIGHUP, syscall.SIGINT}

// dropped receives the signals the server takes over from "ignored". It
// is never read: signal.Notify drops what does not fit, so the server
// goes on ignoring them itself.
var dropped = make(chan os.Signal, 1)

// defaultSignalsForChildren makes the programs the server starts begin
// with the default action for the signals of inheritedIgnored: the
// server handles them (and drops them), and exec resets a handled
// signal to its default. It is called before each start, since the
// embedding program may ignore a signal at any time.
func defaultSignalsForChildren() {
	for _, sig := range inheritedIgnored {
		if signal.Ignored(sig) {
			signal.Notify(dropped, sig)
		}
	}
}
