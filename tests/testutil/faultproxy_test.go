package testutil

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestFaultProxy(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok "+r.Host)
	}))
	t.Cleanup(target.Close)
	p := StartFaultProxy(t, target.URL)
	client := &http.Client{Timeout: 2 * time.Second}

	get := func() (int, string, error) {
		resp, err := client.Get(p.Endpoint + "/x")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	tests := []struct {
		name    string
		setup   func()
		status  int
		wantErr bool
	}{
		{"pass", func() { p.SetMode(ProxyPass, 0) }, 200, false},
		{"503", func() { p.Fail503(1) }, 503, false},
		{"503 used up", func() {}, 200, false},
		{"reset", func() { p.SetMode(ProxyReset, 0) }, 0, true},
		{"stall beyond the client timeout", func() { p.SetMode(ProxyStall, 10*time.Second) }, 0, true},
		{"short stall", func() { p.SetMode(ProxyStall, 50*time.Millisecond) }, 200, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			status, body, err := get()
			if (err != nil) != tt.wantErr || status != tt.status {
				t.Fatalf("GET = %d %q, %v; want %d, error %v", status, body, err, tt.status, tt.wantErr)
			}
			if status == 200 && body != "ok "+p.Addr {
				t.Fatalf("body %q: the Host header was not kept", body)
			}
		})
	}
	// Go's client retries a GET once on a reused connection that was reset, so the count
	// may be one more.
	if n := p.Requests(); n < len(tests) || n > len(tests)+1 {
		t.Errorf("Requests() = %d, want %d or %d", n, len(tests), len(tests)+1)
	}
}
