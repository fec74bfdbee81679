package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// The key commands read passphrases here and touch only key objects: they never go to a
// gateway (forwardable) and work while one runs.

// RepoPasswdCmd changes the passphrase.
type RepoPasswdCmd struct {
	NewPasswordFile string `help:"File holding the new passphrase (else CAIRN_NEW_PASSWORD, else a prompt)." type:"existingfile" placeholder:"FILE"`
}

// Run changes the passphrase.
func (c *RepoPasswdCmd) Run(ctx context.Context, g *Globals) error {
	cfg, err := g.config()
	if err != nil {
		return err
	}
	oldPw, err := g.readPassword("current passphrase: ", false)
	if err != nil {
		return err
	}
	newPw, err := g.readNewPassword(c.NewPasswordFile, "new passphrase: ")
	if err != nil {
		return err
	}
	if err := gateway.ChangePassword(ctx, cfg, oldPw, newPw); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, "passphrase changed")
	return nil
}

// readNewPassword reads a new passphrase from file, else CAIRN_NEW_PASSWORD, else twice on
// the terminal.
func (g *Globals) readNewPassword(file, prompt string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case os.Getenv("CAIRN_NEW_PASSWORD") != "":
		return os.Getenv("CAIRN_NEW_PASSWORD"), nil
	case !term.IsTerminal(int(os.Stdin.Fd())):
		return "", gateway.Errorf(gateway.ErrInvalid, "no new passphrase: set CAIRN_NEW_PASSWORD or use --new-password-file")
	}
	return g.promptSecret(prompt, true, "passphrases")
}

// keyCommand reads the configuration and the passphrase of a key command. Without a
// passphrase it goes on, so that an unencrypted repository says it has no keys rather than
// asking for one.
func (g *Globals) keyCommand(prompt string) (gateway.Config, string, error) {
	cfg, err := g.config()
	if err != nil {
		return gateway.Config{}, "", err
	}
	pw, err := g.readPassword(prompt, false)
	if errors.Is(err, repo.ErrPasswordRequired) {
		return cfg, "", nil
	}
	return cfg, pw, err
}

// RepoKeyCmd groups the key commands.
type RepoKeyCmd struct {
	List    RepoKeyListCmd    `cmd:"" default:"withargs" help:"List the keys: id, label, who added it and when; * marks the one this passphrase opens."`
	Add     RepoKeyAddCmd     `cmd:"" help:"Add a key: another passphrase that opens the repository."`
	Remove  RepoKeyRemoveCmd  `cmd:"" help:"Remove a key (not the one this passphrase opens): its passphrase no longer opens the repository."`
	Restore RepoKeyRestoreCmd `cmd:"" help:"Write again, from its second copy, the key object this passphrase opens when it is missing (removed outside cairn)."`
}

// RepoKeyListCmd lists the keys.
type RepoKeyListCmd struct{}

// Run lists the keys.
func (c *RepoKeyListCmd) Run(ctx context.Context, g *Globals) error {
	cfg, pw, err := g.keyCommand("passphrase: ")
	if err != nil {
		return err
	}
	keys, err := gateway.Keys(ctx, cfg, pw)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, keys)
	}
	t := &table{header: []string{"", "ID", "Label", "User", "Host", "Created (UTC)", "Problem"}}
	for _, k := range keys {
		mark := ""
		if k.Current {
			mark = "*"
		}
		created := "-"
		if !k.Created.IsZero() {
			created = k.Created.UTC().Format(time.DateTime)
		}
		t.add(mark, k.ID, dash(k.Label), dash(k.User), dash(k.Host), created, dash(k.Problem))
	}
	return t.write(g.stdout)
}

// RepoKeyAddCmd adds a key.
type RepoKeyAddCmd struct {
	Label           string `help:"Whose key it is (an admin, a gateway host), shown by 'repo key list'." placeholder:"LABEL"`
	NewPasswordFile string `help:"File holding the new key's passphrase (else CAIRN_NEW_PASSWORD, else a prompt)." type:"existingfile" placeholder:"FILE"`
}

// Run adds the key.
func (c *RepoKeyAddCmd) Run(ctx context.Context, g *Globals) error {
	if err := repo.ValidKeyLabel(c.Label); err != nil {
		return gateway.Errorf(gateway.ErrInvalid, "--label: %v", err)
	}
	cfg, pw, err := g.keyCommand("a passphrase that opens the repository: ")
	if err != nil {
		return err
	}
	newPw, err := g.readNewPassword(c.NewPasswordFile, "the new key's passphrase: ")
	if err != nil {
		return err
	}
	k, err := gateway.AddKey(ctx, cfg, pw, newPw, c.Label)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, k)
	}
	fmt.Fprintf(g.stdout, "key %s added\n", k.ID)
	return nil
}

// RepoKeyRemoveCmd removes a key.
type RepoKeyRemoveCmd struct {
	ID string `arg:"" help:"The key's id, or a unique start of it (at least 4 characters)."`
}

// Run removes the key.
func (c *RepoKeyRemoveCmd) Run(ctx context.Context, g *Globals) error {
	cfg, pw, err := g.keyCommand("passphrase: ")
	if err != nil {
		return err
	}
	k, err := gateway.RemoveKey(ctx, cfg, pw, c.ID)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, k)
	}
	fmt.Fprintf(g.stdout, "key %s removed\n", k.ID)
	return nil
}

// RepoKeyRestoreCmd writes a missing key object again from its second copy.
type RepoKeyRestoreCmd struct{}

// Run restores the key object the passphrase opens.
func (c *RepoKeyRestoreCmd) Run(ctx context.Context, g *Globals) error {
	cfg, pw, err := g.keyCommand("passphrase: ")
	if err != nil {
		return err
	}
	id, err := gateway.RestoreKey(ctx, cfg, pw)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]string{"id": id})
	}
	fmt.Fprintf(g.stdout, "key %s written again from its second copy: this passphrase opens the repository again\n", id)
	return nil
}
