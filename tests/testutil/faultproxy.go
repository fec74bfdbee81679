package testutil

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// ProxyMode is what a FaultProxy does with the requests it receives.
type ProxyMode int

const (
	// ProxyPass forwards requests to the target.
	ProxyPass ProxyMode = iota
	// ProxyReset answers each request by resetting the connection (TCP RST).
	ProxyReset
	// ProxyStall holds each request for the stall duration before forwarding it.
	ProxyStall
)

// FaultProxy is an HTTP proxy on 127.0.0.1 in front of a real server, that passes requests
// through, resets connections, stalls, or answers 503 to the next N requests. It works per
// request, not per connection, so a mode change reaches connections the client keeps alive.
// It does not rewrite the Host header, so S3 signatures made for the proxy's address stay
// valid at the target.
type FaultProxy struct {
	// Addr is the proxy's "127.0.0.1:PORT"; Endpoint is "http://" + Addr.
	Addr, Endpoint string

	srv   *http.Server
	proxy *httputil.ReverseProxy

	mu       sync.Mutex // guards the fields below
	mode     ProxyMode
	stall    time.Duration
	fail503  int
	requests int
}

// StartFaultProxy starts a proxy in front of target ("host:port" or "http://host:port") in
// ProxyPass mode, and closes it when the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		u = &url.URL{Scheme: "http", Host: target}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fault proxy: listen: %v", err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	rp.ErrorLog = nil
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		// The target is down: answer as a gateway would.
		w.WriteHeader(http.StatusBadGateway)
	}
	p := &FaultProxy{Addr: l.Addr().String(), proxy: rp}
	p.Endpoint = "http://" + p.Addr
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(p.Close)
	return p
}

// SetMode switches how the following requests are handled; stall is used by ProxyStall.
func (p *FaultProxy) SetMode(m ProxyMode, stall time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.stall = m, stall
}

// Fail503 makes the next n requests get "503 Slow Down" (before the mode applies).
func (p *FaultProxy) Fail503(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail503 = n
}

// Requests returns how many requests the proxy has received.
func (p *FaultProxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Close stops the proxy and drops its connections.
func (p *FaultProxy) Close() {
	_ = p.srv.Close()
}

// ServeHTTP applies the fault for one request.
func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests++
	mode, stall := p.mode, p.stall
	fail := p.fail503 > 0
	if fail {
		p.fail503--
	}
	p.mu.Unlock()

	switch {
	case fail:
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	case mode == ProxyReset:
		resetConn(w)
		return
	case mode == ProxyStall:
		select {
		case <-time.After(stall):
		case <-r.Context().Done(): // the client gave up
			return
		}
	}
	p.proxy.ServeHTTP(w, r)
}

// resetConn closes the request's connection with SO_LINGER 0, so the client sees a reset.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}
