package main

import (
	"context"
	"fmt"
	"net"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
)

// NBDCmd serves every available backup read-only over NBD, until Ctrl-C.
type NBDCmd struct {
	Listen    string `help:"TCP address to serve on; beyond loopback it needs --tokens or --project." default:"127.0.0.1:10809" placeholder:"ADDR"`
	Tokens    string `help:"Tokens file of 'cairn serve' (TOKEN USER PROJECT ROLE[,ROLE...]): export names become TOKEN@BACKUP_ID and TOKEN@VOLUME/latest (and their /lvm/VG/LV)." type:"existingfile" placeholder:"FILE"`
	CacheSize string `help:"Bound on decompressed blocks kept in memory." default:"64M"`
}

// Run serves until SIGINT or SIGTERM.
func (c *NBDCmd) Run(ctx context.Context, g *Globals) error {
	cache, err := parseSize(c.CacheSize)
	if err != nil {
		return usageError("--cache-size: " + err.Error())
	}
	var o gateway.NBDOptions
	if g.Project != gateway.DefaultProject {
		o.Project = g.Project // the admin project exports every project's backups, as mount shows them
	}
	if c.Tokens != "" {
		tokens, err := api.LoadTokens(c.Tokens)
		if err != nil {
			return usageError("--tokens: " + err.Error())
		}
		o.Tokens = tokens.Lookup
	}
	if err := checkListen("--listen", c.Listen, "127.0.0.1:10809"); err != nil {
		return err
	}
	if err := gateway.CheckNBDListen(c.Listen, o); err != nil {
		return err
	}
	g.chunkCache, g.server = cache, true
	setMemoryLimit(baseMemoryLimit, cache)
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	l, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	// The NBD server owns the index: it serves the other commands on the CLI socket, as a
	// mount does, so 'cairn backup create' works beside it and its backups are served at
	// once. Before (found by hand, 2026-12-07), every other command waited its --lock-wait
	// and failed, told to reach the server through a socket it did not have.
	if stopServing, serr := serveCommands(s, g.socketPath()); serr != nil {
		fmt.Fprintf(g.stderr, "cairn: other commands cannot use this repository while it is served over NBD: %v\n", serr)
	} else {
		defer stopServing()
	}
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "cairn: serving the backups of %s over NBD on %s (nbd://%s/BACKUP_ID, nbd://%s/VOLUME/latest, either with /lvm/VG/LV); Ctrl-C stops\n",
			s.Location(), l.Addr(), l.Addr(), l.Addr())
	}
	return s.ServeNBD(ctx, l, o)
}
