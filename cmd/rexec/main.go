// Command rexec runs a binary on the host through qtfs-server as if it ran
// on the DPU. Linked under another name (runc -> rexec) it runs the host's
// binary of that name. See package rexec.
package main

import (
	"os"

	"github.com/qtfs/qtfs/pkg/rexec"
)

func main() { os.Exit(rexec.Main(os.Args)) }
