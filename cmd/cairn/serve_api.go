package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
)

// newAPI returns the Block Storage v3 API (with /metrics and /healthz) the gateway serves.
func newAPI(svc *gateway.Service, c *ServeCmd, log *slog.Logger) (http.Handler, error) {
	opts := api.Options{Auth: c.Auth, Logger: log}
	if c.Tokens != "" {
		tokens, err := api.LoadTokens(c.Tokens)
		if err != nil {
			return nil, fmt.Errorf("%w: --tokens: %v", gateway.ErrInvalid, err)
		}
		opts.Tokens = tokens
	}
	return api.New(svc, opts), nil
}
