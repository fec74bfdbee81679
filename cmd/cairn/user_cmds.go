package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"golang.org/x/term"
)

// UserCmd keeps the users file: the people who sign in to the API with a name and a password
// (cinder --os-auth-url, an openrc), for 'cairn serve --users FILE'.
type UserCmd struct {
	Add    UserAddCmd    `cmd:"" help:"Add a user to a project, or give a user a new password or roles there."`
	Delete UserDeleteCmd `cmd:"" help:"Remove a user from a project (or from all; their tokens stop working)."`
	List   UserListCmd   `cmd:"" help:"List the users file's users, projects and roles (never the hashes)."`
}

// usersFile is the users file flag every user command takes.
type usersFile struct {
	Users string `help:"The users file that 'cairn serve --users' reads." env:"CAIRN_USERS" required:"" placeholder:"FILE"`
}

// UserAddCmd adds or changes a line.
type UserAddCmd struct {
	usersFile
	User         string   `arg:"" help:"User name."`
	Project      string   `arg:"" help:"Project the user acts in (the API's project id and name)."`
	Role         []string `help:"Role in the project: member, admin (every project) or metrics (reads /metrics only); repeat for more." default:"member"`
	PasswordFile string   `name:"user-password-file" help:"File holding the user's password (else CAIRN_USER_PASSWORD, else a prompt)." type:"existingfile" placeholder:"FILE"`
}

// Run writes the line, replacing the user's line for the project if there is one.
func (c *UserAddCmd) Run(g *Globals) error {
	for _, f := range []struct{ what, v string }{{"user", c.User}, {"project", c.Project}} {
		if f.v == "" || strings.ContainsAny(f.v, " \t\r\n#,") || strings.ContainsRune(f.v, 0) {
			return gateway.Errorf(gateway.ErrInvalid, "%s %q: give a name without spaces, commas or #", f.what, f.v)
		}
	}
	if err := api.CheckRoles(c.Role); err != nil {
		return gateway.Errorf(gateway.ErrInvalid, "%v", err)
	}
	pw, err := c.password(g)
	if err != nil {
		return err
	}
	hash, err := api.HashPassword(pw)
	if err != nil {
		return gateway.Errorf(gateway.ErrInvalid, "%v", err)
	}
	lines, err := api.ReadUserLines(c.Users)
	if err != nil {
		return err
	}
	line := api.UserLine{User: c.User, Project: c.Project, Roles: c.Role, Hash: hash}
	verb := "added"
	if i := slices.IndexFunc(lines, func(l api.UserLine) bool { return l.User == c.User && l.Project == c.Project }); i >= 0 {
		lines[i], verb = line, "changed"
	} else {
		lines = append(lines, line)
	}
	if err := writeUserLines(c.Users, lines); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "user %s %s in project %s (roles %s) in %s\n", c.User, verb, c.Project, strings.Join(c.Role, ","), c.Users)
	return nil
}

func (c *UserAddCmd) password(g *Globals) (string, error) {
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case os.Getenv("CAIRN_USER_PASSWORD") != "":
		return os.Getenv("CAIRN_USER_PASSWORD"), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", gateway.Errorf(gateway.ErrInvalid, "no password for %s: set CAIRN_USER_PASSWORD or use --user-password-file", c.User)
	}
	return g.promptSecret("password for "+c.User+": ", true, "passwords")
}

// UserDeleteCmd removes lines.
type UserDeleteCmd struct {
	usersFile
	User    string `arg:"" help:"User name."`
	Project string `arg:"" optional:"" help:"Only this project's line (default: every project of the user)."`
}

// Run removes the user's lines.
func (c *UserDeleteCmd) Run(g *Globals) error {
	lines, err := api.ReadUserLines(c.Users)
	if err != nil {
		return err
	}
	kept := slices.DeleteFunc(slices.Clone(lines), func(l api.UserLine) bool {
		return l.User == c.User && (c.Project == "" || l.Project == c.Project)
	})
	if len(kept) == len(lines) {
		where := ""
		if c.Project != "" {
			where = " in project " + c.Project
		}
		return gateway.Errorf(gateway.ErrNotFound, "user %s%s is not in %s ('cairn user list' shows who is)", c.User, where, c.Users)
	}
	if err := writeUserLines(c.Users, kept); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "removed %d line(s) of user %s from %s\n", len(lines)-len(kept), c.User, c.Users)
	return nil
}

// UserListCmd lists the lines without their hashes.
type UserListCmd struct {
	usersFile
}

// Run lists the users.
func (c *UserListCmd) Run(g *Globals) error {
	if _, err := os.Stat(c.Users); err != nil {
		return gateway.Errorf(gateway.ErrNotFound, "users file %s: %v (make it with 'cairn user add')", c.Users, err)
	}
	lines, err := api.ReadUserLines(c.Users)
	if err != nil {
		return err
	}
	type row struct {
		User    string   `json:"user"`
		Project string   `json:"project"`
		Roles   []string `json:"roles"`
	}
	rows := make([]row, 0, len(lines))
	for _, l := range lines {
		rows = append(rows, row{l.User, l.Project, l.Roles})
	}
	if g.json() {
		return writeJSON(g.stdout, rows)
	}
	t := &table{header: []string{"User", "Project", "Roles"}}
	for _, r := range rows {
		t.add(r.User, r.Project, strings.Join(r.Roles, ","))
	}
	return t.write(g.stdout)
}

// writeUserLines replaces the users file whole and durably (a temporary file, fsync, rename,
// fsync of the directory), readable by its owner only: it holds password hashes. A running
// gateway reads it again at its next sign-in.
func writeUserLines(path string, lines []api.UserLine) error {
	var b strings.Builder
	b.WriteString("# cairn users: USER PROJECT ROLE[,ROLE...] BCRYPT_HASH (edit with 'cairn user add|delete')\n")
	for _, l := range lines {
		b.WriteString(l.String() + "\n")
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".users-*")
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("users file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("users file: %w", err)
	}
	defer d.Close()
	return d.Sync()
}
