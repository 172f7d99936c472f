// hello is the lab's test workload, one static binary for every job a test gives a pod:
//
//	hello                  print one line and exit (a runtime can start a container)
//	hello serve :8080      answer every HTTP request with "hello from <hostname>"
//	hello get URL          fetch URL and print the body (exit 1 on any error or non-200)
//	hello resolve NAME     print NAME's addresses, from the pod's /etc/resolv.conf (cluster DNS)
//	hello load URL SECONDS [WORKERS]
//	                       fetch URL over and over (WORKERS at a time, default 2) for SECONDS, then exit:
//	                       a bounded load generator (a new connection per request, so a Service spreads it)
//	hello count N MS TEXT  print "TEXT seq I" for I = 1..N, one every MS milliseconds, then wait for the end
//	                       (a log writer whose every line can be counted; a long-running container)
//	hello probe MS ADDR... try a TCP connection to every HOST:PORT at once, each given MS milliseconds, and print
//	                       "ADDR open|refused|timeout|error" per line (a connectivity matrix row in one exec)
//
// `hello serve` also answers /burn?ms=N by spinning the CPU for N milliseconds (at most 1000) first, and
// /metrics with its request count in Prometheus' text format (a scrape target).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const maxBurn = time.Second // one request never holds a CPU longer

// burn spins one CPU until d has passed (wall time: a throttled container burns its whole CPU limit).
func burn(d time.Duration) uint64 {
	var n uint64
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		for i := 0; i < 10000; i++ {
			n = n*6364136223846793005 + 1442695040888963407
		}
	}
	return n
}

// load fetches url from workers goroutines until seconds have passed; exit 1 only if no request succeeded.
func load(url string, seconds, workers int) {
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := client.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					time.Sleep(200 * time.Millisecond) // a failing target is not hammered
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("load %s: %d ok, %d failed in %d s\n", url, ok.Load(), failed.Load(), seconds)
	if ok.Load() == 0 {
		os.Exit(1)
	}
}

// count prints n numbered lines on a fixed schedule (line i at start + (i-1)*every: no drift), then waits for
// SIGTERM, so the container stays running and its log file stays where collectors read it.
func count(n int, every time.Duration, text string) {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	start := time.Now()
	for i := 1; i <= n; i++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(i-1) * every))):
		}
		fmt.Printf("%s seq %d\n", text, i)
	}
	<-stop
}

// probe dials every address concurrently and reports how each attempt ended, in the order given.
func probe(timeout time.Duration, addrs []string) {
	results := make([]string, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func(i int, addr string) {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, timeout)
			switch {
			case err == nil:
				conn.Close()
				results[i] = "open"
			case errors.Is(err, syscall.ECONNREFUSED):
				results[i] = "refused"
			case os.IsTimeout(err):
				results[i] = "timeout" // a dropped SYN: what a policy's drop looks like
			default:
				results[i] = "error " + strings.ReplaceAll(err.Error(), " ", "_")
			}
		}(i, addr)
	}
	wg.Wait()
	for i, addr := range addrs {
		fmt.Printf("%s %s\n", addr, results[i])
	}
}

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
		var served atomic.Int64
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			fmt.Fprintf(w, "hello from %s\n", host)
		})
		http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			fmt.Fprintf(w, "# HELP hello_requests_total Requests answered with hello.\n"+
				"# TYPE hello_requests_total counter\nhello_requests_total %d\n", served.Load())
		})
		http.HandleFunc("/burn", func(w http.ResponseWriter, r *http.Request) {
			ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
			if err != nil || ms < 0 {
				http.Error(w, "usage: /burn?ms=N", http.StatusBadRequest)
				return
			}
			d := min(time.Duration(ms)*time.Millisecond, maxBurn)
			burn(d)
			fmt.Fprintf(w, "burned %d ms on %s\n", d.Milliseconds(), host)
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
	case "load":
		if len(os.Args) < 4 || len(os.Args) > 5 {
			fail("usage: hello load URL SECONDS [WORKERS]")
		}
		seconds, err := strconv.Atoi(os.Args[3])
		if err != nil || seconds < 1 {
			fail("load: SECONDS must be a whole number, at least 1")
		}
		workers := 2
		if len(os.Args) == 5 {
			if workers, err = strconv.Atoi(os.Args[4]); err != nil || workers < 1 {
				fail("load: WORKERS must be a whole number, at least 1")
			}
		}
		load(os.Args[2], seconds, workers)
	case "count":
		if len(os.Args) != 5 {
			fail("usage: hello count N MS TEXT")
		}
		n, err := strconv.Atoi(os.Args[2])
		if err != nil || n < 1 {
			fail("count: N must be a whole number, at least 1")
		}
		ms, err := strconv.Atoi(os.Args[3])
		if err != nil || ms < 0 {
			fail("count: MS must be a whole number of milliseconds")
		}
		count(n, time.Duration(ms)*time.Millisecond, os.Args[4])
	case "probe":
		if len(os.Args) < 4 {
			fail("usage: hello probe MS HOST:PORT...")
		}
		ms, err := strconv.Atoi(os.Args[2])
		if err != nil || ms < 1 {
			fail("probe: MS must be a whole number of milliseconds, at least 1")
		}
		probe(time.Duration(ms)*time.Millisecond, os.Args[3:])
	default:
		fail("unknown command %q (serve, get, resolve, load, count, probe)", os.Args[1])
	}
}
