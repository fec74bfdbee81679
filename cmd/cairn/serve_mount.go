package main

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/fusefs"
	"github.com/cairn-backup/cairn/gateway"
)

// mount mounts the FUSE tree inside the gateway, refreshed whenever backups come or go.
func (c *ServeCmd) mount(svc *gateway.Service, g *Globals) (func(), error) {
	if c.Mount == "" {
		return func() {}, nil
	}
	cleared, err := fusefs.PrepareMountpoint(c.Mount)
	if err != nil {
		return nil, err
	}
	if cleared && !g.Quiet {
		fmt.Fprintf(g.stderr, "cairn: cleared a stale mount at %s left by a crashed cairn\n", c.Mount)
	}
	fs, err := fusefs.Mount(c.Mount, svc.Repository(), svc.Index(), fusefs.Options{AllowOther: c.AllowOther, Logger: g.log})
	if err != nil {
		return nil, err
	}
	svc.OnChange(func() { fs.Refresh(context.Background()) })
	return func() {
		svc.OnChange(nil)
		if err := fs.Unmount(); err != nil {
			g.log.Error("unmount failed", "dir", c.Mount, "error", err)
		}
	}, nil
}
