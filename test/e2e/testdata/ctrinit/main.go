// Command ctrinit is the process of the e2e tests' OCI container: a static
// binary that prints a line and then sleeps until it is killed.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Println("ctrinit: running as pid", os.Getpid())
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		for {
			time.Sleep(time.Hour)
		}
	}
}
