// hello is the lab's test workload, one static binary for every job a test gives a pod:
//
//	hello                  print one line and exit (a runtime can start a container)
//	hello serve :8080      answer every HTTP request with "hello from <hostname>"
//	hello get URL          fetch URL and print the body (exit 1 on any error or non-200)
//	hello resolve NAME     print NAME's addresses, from the pod's /etc/resolv.conf (cluster DNS)
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	host, _ := os.Hostname()
	if len(os.Args) < 2 {
		fmt.Printf("hello from a Spectra lab container on %s\n", host)
		return
	}
	switch os.Args[1] {
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", host)
		})
		if err := http.ListenAndServe(addr, nil); err != nil {
			fail("serve %s: %v", addr, err)
		}
	case "get":
		if len(os.Args) != 3 {
			fail("usage: hello get URL")
		}
		client := http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(os.Args[2])
		if err != nil {
			fail("get %s: %v", os.Args[2], err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			fail("get %s: %s", os.Args[2], resp.Status)
		}
		fmt.Print(string(body))
	case "resolve":
		if len(os.Args) != 3 {
			fail("usage: hello resolve NAME")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, os.Args[2])
		if err != nil {
			fail("resolve %s: %v", os.Args[2], err)
		}
		for _, a := range addrs {
			fmt.Println(a)
		}
	default:
		fail("unknown command %q (serve, get, resolve)", os.Args[1])
	}
}
