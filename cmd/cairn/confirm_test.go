package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestAsk(t *testing.T) {
	for _, tc := range []struct {
		input string
		yes   bool
	}{
		{"y\n", true}, {"Y\n", true}, {"yes\n", true}, {" YES \n", true}, {"y", true},
		{"n\n", false}, {"\n", false}, {"", false}, {"no\n", false}, {"yess\n", false}, {"sure\n", false},
	} {
		var out bytes.Buffer
		err := ask(strings.NewReader(tc.input), &out, "delete backup b1")
		if got := err == nil; got != tc.yes {
			t.Errorf("answer %q: confirmed %v, want %v (%v)", tc.input, got, tc.yes, err)
		}
		if err != nil && !errors.Is(err, errDeclined) {
			t.Errorf("answer %q: %v, want errDeclined", tc.input, err)
		}
		if !strings.HasPrefix(out.String(), "delete backup b1? [y/N] ") {
			t.Errorf("prompt %q", out.String())
		}
	}
	if exitCode(errDeclined) != exitFailure {
		t.Errorf("a declined question exits %d, want %d", exitCode(errDeclined), exitFailure)
	}
}

// readLine leaves what follows the answer for the next reader.
func TestReadLineStopsAtNewline(t *testing.T) {
	r := strings.NewReader("yes\nrest")
	if line, err := readLine(r); line != "yes" || err != nil {
		t.Fatalf("readLine: %q, %v", line, err)
	}
	if r.Len() != 4 {
		t.Errorf("readLine consumed past the newline: %d bytes left, want 4", r.Len())
	}
}

func TestConfirmWithoutTerminal(t *testing.T) {
	in, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var errOut bytes.Buffer
	g := &Globals{stdin: in, stderr: &errOut}
	if err := g.confirm("delete backup b1", true); err != nil {
		t.Errorf("--yes: %v", err)
	}
	err = g.confirm("delete backup b1", false)
	if exitCode(err) != exitInvalid {
		t.Errorf("no terminal, no --yes: exit %d, want %d (%v)", exitCode(err), exitInvalid, err)
	}
	if msg := message(err); !strings.Contains(msg, "delete backup b1") || !strings.Contains(msg, "--yes") || strings.Contains(msg, "\n") {
		t.Errorf("no terminal, no --yes: %q should be one line naming the action and --yes", msg)
	}
	if errOut.Len() != 0 {
		t.Errorf("asked although there is no terminal: %q", errOut.String())
	}
}

// Inside a gateway, the client's terminal is asked: the command stops at its question, and
// goes ahead once the client sends it back confirmed.
func TestConfirmForClient(t *testing.T) {
	g := &Globals{client: &client{terminal: true}}
	if err := g.confirm("delete backup b1", false); !errors.Is(err, errAskClient) || g.client.asked != "delete backup b1" {
		t.Errorf("client with a terminal: %v, asked %q; want the question sent back", err, g.client.asked)
	}
	g = &Globals{client: &client{terminal: true, confirmed: []string{"delete backup b1"}}}
	if err := g.confirm("delete backup b1", false); err != nil {
		t.Errorf("confirmed by the client: %v", err)
	}
	// A different question (the state changed meanwhile) is asked again.
	if err := g.confirm("delete backup b2", false); !errors.Is(err, errAskClient) {
		t.Errorf("another question: %v, want it sent back", err)
	}
	g = &Globals{client: &client{}}
	if err := g.confirm("delete backup b1", false); exitCode(err) != exitInvalid || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("client without a terminal: %v, want a usage error naming --yes", err)
	}
	if err := g.confirm("delete backup b1", true); err != nil {
		t.Errorf("client with --yes: %v", err)
	}
}
