// An HTTP server for tests/run.rs in Go (standard library only), under `baton run`: it takes its
// listener as fd 3 after checking LISTEN_PID and LISTEN_FDS, as sd_listen_fds(3) does, and sends
// READY=1 to $NOTIFY_SOCKET once it accepts. It reads $APP_CONF (JSON: {"body", "mode": "ok" |
// "fail" | "hang"}) at start. SIGTERM: every later answer says `Connection: close`; one second
// later (each busy keep-alive client has been told) Shutdown. Not SetKeepAlivesEnabled(false):
// it closes idle connections at once, racing a client that is sending a request on one.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// Set at build time (-ldflags "-X main.builtin=v2"): the body when APP_CONF is unset, so that
// the binary itself is the version (tests/systemd/run-units packages two of them).
var builtin string

type conf struct {
	Body string `json:"body"`
	Mode string `json:"mode"`
}

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") != "1" {
		fmt.Fprintf(os.Stderr, "goapp: no socket for me (LISTEN_PID=%q, pid %d)\n", os.Getenv("LISTEN_PID"), os.Getpid())
		os.Exit(2)
	}
	c := conf{Body: builtin, Mode: "ok"}
	if path := os.Getenv("APP_CONF"); path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goapp:", err)
			os.Exit(2)
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			fmt.Fprintln(os.Stderr, "goapp:", err)
			os.Exit(2)
		}
	}
	if c.Mode == "fail" {
		fmt.Fprintln(os.Stderr, "goapp: this version is broken")
		os.Exit(3)
	}
	ln, err := net.FileListener(os.NewFile(3, os.Getenv("LISTEN_FDNAMES")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "goapp: fd 3:", err)
		os.Exit(2)
	}
	var draining atomic.Bool
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(1200 * time.Millisecond)
		}
		if draining.Load() {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, c.Body)
	})}
	done := make(chan struct{})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	go func() {
		<-stop
		draining.Store(true)
		time.Sleep(time.Second)
		srv.Shutdown(context.Background())
		close(done)
	}()
	if c.Mode != "hang" {
		if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
			conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err == nil {
				conn.Write([]byte("READY=1\nSTATUS=goapp serving " + c.Body))
				conn.Close()
			}
		}
	}
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "goapp:", err)
		os.Exit(1)
	}
	<-done
}
