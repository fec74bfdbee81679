package main

import (
	"log/slog"
	"net/http"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/cairn-backup/cairn/gateway/ui"
)

// newAPI returns the Block Storage v3 API (with /metrics and /healthz) the gateway serves on
// its unix socket, and what it serves on --listen: the same API, with the web console at
// /ui/ unless --no-ui. The console signs in with the API's tokens and users, so it needs --auth token;
// it is never on the socket. console says whether tcp serves the console.
func newAPI(svc *gateway.Service, c *ServeCmd, tokens api.Tokens, users *api.Users, log *slog.Logger) (sock, tcp http.Handler, console bool, err error) {
	opts := api.Options{Auth: c.Auth, Logger: log, Tokens: tokens, Users: users, SocketOnly: c.Listen == ""}
	sock = api.New(svc, opts)
	if !c.UI || c.Listen == "" {
		return sock, sock, false, nil
	}
	if c.Auth != api.AuthToken {
		log.Warn("the web console is off: it signs in with tokens, and the API runs with --auth " + c.Auth)
		return sock, sock, false, nil
	}
	public, err := ui.ParsePublicURL(c.PublicURL)
	if err != nil {
		return nil, nil, false, gateway.Errorf(gateway.ErrInvalid, "--public-url: %v", err)
	}
	pages, err := ui.New(svc, ui.Options{Tokens: opts.Tokens, Users: users, Logger: log, PublicURL: public})
	if err != nil {
		return nil, nil, false, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", pages)
	mux.Handle("/ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	mux.Handle("/", sock)
	return sock, mux, true, nil
}
