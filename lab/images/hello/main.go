// hello prints one line and exits: the smallest image that proves a runtime can start a container.
package main

import (
	"fmt"
	"os"
)

func main() {
	host, _ := os.Hostname()
	fmt.Printf("hello from a Spectra lab container on %s\n", host)
}
