package main

import (
	"log/slog"
	"net/http"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newAPI returns the HTTP API the gateway serves.
func newAPI(svc *gateway.Service, c *ServeCmd, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(svc.Metrics(), promhttp.HandlerOpts{}))
	return mux, nil
}
