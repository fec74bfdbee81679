package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"golang.org/x/term"
)

// Destructive commands ask first. The service says what a command would destroy (a
// gateway.Confirm question); confirm asks the person at the terminal, or takes --yes for an
// answer. Without a terminal and without --yes the command stops before it changed anything.

// errDeclined: the person at the terminal did not answer yes.
var errDeclined = errors.New("not confirmed: nothing was changed")

// confirm asks question on the terminal and returns nil when the answer is yes; yes (the
// command's --yes) answers for the user. Without a terminal on stdin it refuses with a usage
// error (exit 2) naming --yes. Inside a gateway, running a command a client forwarded, the
// client's terminal is asked (see client.confirm).
func (g *Globals) confirm(question string, yes bool) error {
	if yes {
		return nil
	}
	if g.client != nil {
		return g.client.confirm(question)
	}
	in := g.stdin
	if in == nil {
		in = os.Stdin
	}
	if !term.IsTerminal(int(in.Fd())) {
		return needsYes(question)
	}
	return ask(in, g.stderr, question)
}

// confirmer is confirm as the service's Confirm, for a command's --yes.
func (g *Globals) confirmer(ctx context.Context, yes bool) context.Context {
	return gateway.WithConfirm(ctx, func(q string) error { return g.confirm(q, yes) })
}

// needsYes is the refusal when nobody can be asked.
func needsYes(question string) error {
	return usageError(question + ": not confirmed; add --yes (there is no terminal to ask on)")
}

// ask writes "question? [y/N] " to w and reads one line from in: "y" or "yes" (any case) is
// yes, anything else (an empty line, end of input) no.
func ask(in io.Reader, w io.Writer, question string) error {
	fmt.Fprintf(w, "%s? [y/N] ", question)
	line, err := readLine(in)
	if err != nil && line == "" {
		fmt.Fprintln(w)
		return errDeclined
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errDeclined
}

// readLine reads up to a newline a byte at a time, so nothing after it is consumed.
func readLine(in io.Reader) (string, error) {
	var b strings.Builder
	var c [1]byte
	for b.Len() < 1024 {
		n, err := in.Read(c[:])
		if n == 1 {
			if c[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(c[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
	return b.String(), nil
}
