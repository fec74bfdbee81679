package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/stack"
	"github.com/cairn-backup/cairn/units"
	"golang.org/x/term"
)

// BackupCopyCmd copies backups into another repository.
type BackupCopyCmd struct {
	Backups        []string `arg:"" name:"backup" optional:"" help:"Backup ids or names; each is copied, one failing stops none (exit non-zero)."`
	All            bool     `help:"Copy every available backup of the project (with --all-projects, of every project) the destination lacks, oldest first; one it deleted after an earlier copy is left (copy it by id to bring it back)." xor:"backups"`
	AllProjects    bool     `help:"With --all: every project's backups (admins)."`
	To             string   `placeholder:"DIR|URL" help:"The destination: a directory or s3://BUCKET/PREFIX made with 'cairn repo init' (the S3 flags and AWS_* variables apply to it, unless --to-config says otherwise)."`
	ToConfig       string   `type:"existingfile" placeholder:"FILE" help:"A cairn configuration file for the destination (repo, endpoint, region, access_key, secret_key, path_style, state_dir, password_file): another S3 service or other keys than the source's."`
	ToPasswordFile string   `type:"existingfile" placeholder:"FILE" help:"File holding the destination's passphrase (else --to-config's, else CAIRN_TO_PASSWORD, else a prompt; through a gateway, only the files)."`
	ToStateDir     string   `placeholder:"DIR" help:"Where the destination's index lives (default: as for --repo of it; give another while a gateway serves the destination)."`
	DryRun         bool     `help:"Say what would be copied, and copy nothing."`
}

// Run copies each backup, oldest first, and prints a row each.
func (c *BackupCopyCmd) Run(ctx context.Context, g *Globals) error {
	if !c.All && len(c.Backups) == 0 {
		return usageError("give the backups to copy, or --all")
	}
	if c.AllProjects && !c.All {
		return usageError("--all-projects goes with --all")
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	dst, err := g.openDestination(ctx, s, c)
	if err != nil {
		return err
	}
	defer dst.Close()
	refs := c.Backups
	if c.All {
		list, err := s.ListBackups(ctx, gateway.ListFilter{AllProjects: c.AllProjects, Status: string(index.BackupAvailable)})
		if err != nil {
			return err
		}
		refs = nil
		for _, b := range list {
			refs = append(refs, b.ID)
		}
	} else {
		// Oldest first, so that an incremental's parent is copied before it and the copy
		// reads only what changed.
		refs = oldestFirst(ctx, s, refs)
	}
	failed := failures{g: g, total: len(refs)}
	var results []*gateway.CopyResult
	planned := map[string]*index.Backup{} // with --dry-run: the backups the run would copy
	var skipped []string                  // deleted in the destination after an earlier copy
	t := &table{header: []string{"ID", "Volume", "Name", "Created", "Result", "Read", "Stored", "Seconds"}}
	for _, ref := range refs {
		p := g.progress("copying " + ref)
		res, err := s.CopyBackup(ctx, ref, dst, gateway.CopyOptions{DryRun: c.DryRun, SkipDeletedThere: c.All, Progress: p.update})
		p.finish()
		if err != nil {
			failed.add(ref, err)
			continue
		}
		results = append(results, res)
		b := res.Backup
		if res.DryRun {
			// Its parent would be copied first, in this run.
			if p := planned[b.ParentID]; res.Base == "" && p != nil && p.Size == b.Size {
				res.Base = p.ID
			}
			planned[b.ID] = b
		}
		result, read, stored := "already there", "-", "-"
		switch {
		case res.Skipped != "":
			result = "deleted there: not copied again"
			skipped = append(skipped, b.ID)
		case res.DryRun && res.Base != "":
			result = "would copy (changes only)"
		case res.DryRun:
			result = "would copy (full read)"
		case res.Copied:
			result = "copied (full read)"
			if res.Base != "" {
				result = "copied (changes only)"
			}
			read, stored = units.Bytes(b.Stats.ReadBytes), units.Bytes(b.Stats.NewBytes)
		}
		t.add(b.ID, cmp.Or(b.VolumeName, b.VolumeID), none(b.Name), b.CreatedAt.Local().Format("2006-01-02 15:04"), result, read, stored,
			strconv.FormatFloat(res.Seconds, 'f', 1, 64))
	}
	if err := writeRows(g, results, t); err != nil {
		return err
	}
	if len(skipped) > 0 && !g.json() {
		fmt.Fprintf(g.stderr, "cairn: %d of these backups were deleted in the destination after an earlier copy, and were left; a copy by id brings one back ('cairn backup copy %s')\n", len(skipped), skipped[0])
	}
	return failed.err("backups", "not copied")
}

// oldestFirst returns the backups refs name, by id and each once, in the order they were
// made; a ref that names none stays, last, for the copy to say so.
func oldestFirst(ctx context.Context, s *gateway.Service, refs []string) []string {
	out := make([]string, 0, len(refs))
	for _, n := range byCreation(ctx, s, refs, false) {
		ref := n.ref
		if n.b != nil {
			ref = n.b.ID
		}
		if !slices.Contains(out, ref) {
			out = append(out, ref)
		}
	}
	return out
}

// openDestination opens the repository a copy from s writes to: as --to-config says, with
// --to, --to-state-dir and the passphrase given over it, and s's S3 settings where neither says.
func (g *Globals) openDestination(ctx context.Context, s *gateway.Service, c *BackupCopyCmd) (*gateway.Service, error) {
	t := gateway.CopyTarget{CopyConfig: c.ToConfig, CopyPasswordFile: c.ToPasswordFile}
	if c.To != "" {
		t.CopyTo = g.clientPath(c.To)
	}
	if c.ToStateDir != "" {
		t.CopyStateDir, _ = filepath.Abs(g.clientPath(c.ToStateDir))
	}
	d, err := t.Destination()
	if err != nil {
		return nil, err
	}
	to := cmp.Or(c.To, d.Repo)
	if d.Repo == "" {
		return nil, usageError("give the destination with --to DIR|s3://BUCKET/PREFIX, or a --to-config file that names its repo")
	}
	if u, err := stack.ParseURL(d.Repo); err != nil {
		return nil, usageError(fmt.Sprintf("destination %q: give a directory or s3://BUCKET/PREFIX", to))
	} else if u.Kind == stack.Local {
		d.Repo, _ = filepath.Abs(u.Path)
	}
	if d.Password == "" && g.shared == nil {
		// Neither file gave one: the variable, then the terminal. A gateway has neither the
		// client's variables nor its terminal.
		d.Password = os.Getenv("CAIRN_TO_PASSWORD")
	}
	dst, err := s.OpenDestination(ctx, d)
	if errors.Is(err, repo.ErrPasswordRequired) && d.Password == "" && g.shared == nil && !g.noPrompt && term.IsTerminal(int(os.Stdin.Fd())) {
		if d.Password, err = g.promptSecret("destination repository passphrase: ", false, "passphrases"); err != nil {
			return nil, err
		}
		dst, err = s.OpenDestination(ctx, d)
	}
	switch {
	case errors.Is(err, repo.ErrPasswordRequired):
		return nil, usageError(fmt.Sprintf("destination %s is encrypted: give its passphrase in --to-password-file FILE (or CAIRN_TO_PASSWORD, not through a gateway)", to))
	case errors.Is(err, index.ErrLocked):
		return nil, fmt.Errorf("destination %s: %w; or give the copy an index of its own with --to-state-dir DIR", to, err)
	case err != nil:
		return nil, fmt.Errorf("destination %s: %w", to, err)
	}
	return dst, nil
}

// clientPath is path as the user meant it: relative to the working directory of the CLI that
// gave it, also when a gateway runs the command.
func (g *Globals) clientPath(path string) string {
	if g.client != nil && g.client.cwd != "" && path != "" && !filepath.IsAbs(path) && !strings.Contains(path, "://") {
		return filepath.Join(g.client.cwd, path)
	}
	return path
}
