package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alecthomas/kong"
	"github.com/cairn-backup/cairn/gateway"
	"golang.org/x/term"
)

// A gateway runs the CLI's commands for it: the CLI sends its arguments and working directory
// over the gateway's unix socket, the gateway runs the same kong command in-process against its
// service and streams stdout, stderr and the exit code back as JSON lines. So the CLI works the
// same embedded or against a gateway, with the same output, and no command is written twice.

const execPath = "/cairn/v1/exec"

type execRequest struct {
	Args    []string `json:"args"`
	Cwd     string   `json:"cwd"`
	Project string   `json:"project"`
	// Terminal: the client can ask its user to confirm; Confirmed are the questions its user
	// answered yes to (see client).
	Terminal  bool     `json:"terminal,omitempty"`
	Confirmed []string `json:"confirmed,omitempty"`
	// ReadOnly: the client was given --read-only (or CAIRN_READ_ONLY, or read_only in its
	// configuration file, none of which the gateway sees).
	ReadOnly bool `json:"read_only,omitempty"`
	// Repository: the repository the client's command is for (its --repo, CAIRN_REPO, its
	// configuration file's or the default, resolved), which the gateway must be serving; empty
	// when the client gave --socket and no repository (whatever that gateway serves).
	Repository string `json:"repository,omitempty"`
}

type execFrame struct {
	Out  string `json:"o,omitempty"`
	Err  string `json:"e,omitempty"`
	Exit *int   `json:"exit,omitempty"`
	// Ask comes with Exit when the command stopped, before changing anything, at a question
	// for the client's user.
	Ask string `json:"ask,omitempty"`
}

// client is the far end of a forwarded command, as the gateway running it sees it. The
// gateway has no terminal to ask on: a destructive command's question goes back to the
// client, which asks its user and, on a yes, sends the command again with the question among
// Confirmed. The command stopped at its question before changing anything, so running it
// again is safe, and a question that changed meanwhile (the state did) is asked again.
type client struct {
	terminal  bool
	confirmed []string
	asked     string
	cwd       string // the client's working directory
}

// errAskClient stops a forwarded command at a question for the client (client.asked).
var errAskClient = errors.New("the client's user must confirm")

// confirm is Globals.confirm inside a gateway.
func (c *client) confirm(question string) error {
	if slices.Contains(c.confirmed, question) {
		return nil
	}
	if !c.terminal {
		return needsYes(question)
	}
	c.asked = question
	return errAskClient
}

// existingFile is kong's existingfile for a command a gateway runs for a client: a relative
// path names a file in the client's working directory, not the gateway's.
func (c *client) existingFile(ctx *kong.DecodeContext, target reflect.Value) error {
	var path string
	if err := ctx.Scan.PopValueInto("file", &path); err != nil {
		return err
	}
	if c.cwd != "" && path != "-" && !filepath.IsAbs(path) && !strings.HasPrefix(path, "~/") {
		path = filepath.Join(c.cwd, path)
	}
	st, err := os.Stat(kong.ExpandPath(path))
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("%q exists but is a directory", path)
	}
	target.SetString(kong.ExpandPath(path))
	return nil
}

// maxQuestions bounds the rounds of one forwarded command (each asks one question).
const maxQuestions = 4

// forwardable says which commands a gateway can run: not those that start a gateway, a
// mount or an NBD server, nor init (no repository yet), nor passwd and key (they read passphrases here and need no
// index).
func forwardable(cmd string) bool {
	for _, local := range []string{"serve", "mount", "nbd", "repo init", "repo passwd", "repo key", "completion", "user"} {
		if cmd == local || strings.HasPrefix(cmd, local+" ") {
			return false
		}
	}
	return true
}

// forward runs the command on a gateway listening on the repository's socket. ok is false
// when no gateway answers there (the command then runs embedded). A question the command
// stops at is asked here, and on a yes the command is sent again.
func forward(ctx context.Context, g *Globals, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	sock := g.socketPath()
	if sock == "" {
		return 0, false
	}
	if _, err := os.Stat(sock); err != nil {
		return 0, false
	}
	cwd, _ := os.Getwd()
	req := execRequest{Args: args, Cwd: cwd, Project: g.Project, Terminal: term.IsTerminal(int(os.Stdin.Fd())), ReadOnly: g.ReadOnly}
	if g.Repo != "" || g.Socket == "" {
		if c, err := g.config(); err == nil {
			req.Repository = c.Repo
		}
	}
	for range maxQuestions {
		code, question, ok := forwardOnce(ctx, sock, req, stdout, stderr)
		if !ok || question == "" {
			return code, ok
		}
		if err := g.confirm(question, false); err != nil {
			fmt.Fprintln(stderr, message(err))
			return exitCode(err), true
		}
		req.Confirmed = append(req.Confirmed, question)
	}
	fmt.Fprintf(stderr, "cairn: gateway at %s asked %d questions in a row: the state keeps changing; try again\n", sock, maxQuestions)
	return exitFailure, true
}

// forwardOnce sends the command once and relays its output; question is what the command
// stopped at, if it did.
func forwardOnce(ctx context.Context, sock string, req execRequest, stdout, stderr io.Writer) (code int, question string, ok bool) {
	client := socketClient(sock)
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://cairn"+execPath, bytes.NewReader(body))
	if err != nil {
		return 0, "", false
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "cairn: interrupted")
			return exitCancelled, "", true
		}
		// A socket nobody listens on is left by a gateway that died: run embedded.
		return 0, "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(stderr, "cairn: gateway at %s: %s\n", sock, strings.TrimSpace(string(msg)))
		return exitFailure, "", true
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var f execFrame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			continue
		}
		io.WriteString(stdout, f.Out)
		io.WriteString(stderr, f.Err)
		if f.Exit != nil {
			return *f.Exit, f.Ask, true
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "cairn: interrupted (the gateway goes on with accepted work)")
		return exitCancelled, "", true
	}
	fmt.Fprintf(stderr, "cairn: gateway at %s closed the connection before the command finished\n", sock)
	return exitFailure, "", true
}

// frameWriter sends one stream of a running command as JSON lines. Writes after the request
// ended (a background job's progress) are dropped.
type frameWriter struct {
	mu     *sync.Mutex
	w      http.ResponseWriter
	stderr bool
	closed *bool
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *f.closed {
		return len(p), nil
	}
	fr := execFrame{Out: string(p)}
	if f.stderr {
		fr = execFrame{Err: string(p)}
	}
	b, _ := json.Marshal(fr)
	if _, err := f.w.Write(append(b, '\n')); err != nil {
		*f.closed = true
		return len(p), nil
	}
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return len(p), nil
}

// execHandler runs forwarded commands. Only the socket's owner can connect (mode 0600), so
// the caller is the local admin, as in the embedded CLI.
func execHandler(svc *gateway.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var req execRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		var mu sync.Mutex
		closed := false
		stdout := &frameWriter{mu: &mu, w: w, closed: &closed}
		stderr := &frameWriter{mu: &mu, w: w, stderr: true, closed: &closed}
		project := req.Project
		if project == "" {
			project = gateway.DefaultProject
		}
		ctx := gateway.WithCaller(r.Context(), gateway.Caller{User: "admin", Project: project, Admin: true})
		ctx = gateway.WithWorkDir(ctx, req.Cwd)
		cl := &client{terminal: req.Terminal, confirmed: req.Confirmed, cwd: req.Cwd}
		code := exitInvalid
		switch {
		case req.Repository != "" && !svc.Serves(req.Repository):
			// One state directory for two repositories: this socket is the other one's.
			fmt.Fprintln(stderr, message(gateway.Errorf(gateway.ErrInvalid, "repository %s: the cairn process on this state directory's socket serves %s, another repository: give each repository a --state-dir of its own (it holds one repository's socket and index), or --socket of the gateway serving %s", req.Repository, svc.Location(), req.Repository)))
		case req.ReadOnly && !svc.Repository().ReadOnly():
			// The gateway's service writes; running the command on it would not honour --read-only.
			fmt.Fprintln(stderr, message(gateway.Errorf(gateway.ErrInvalid, "--read-only: the gateway serving this repository opened it for writing; stop the gateway, or run the command without --read-only")))
		default:
			code = runCLI(ctx, req.Args, stdout, stderr, svc, cl)
		}
		mu.Lock()
		b, _ := json.Marshal(execFrame{Exit: &code, Ask: cl.asked})
		_, _ = w.Write(append(b, '\n'))
		closed = true
		mu.Unlock()
	})
}

// repositoryPath answers which repository the process on the socket serves: a gateway started
// on the same state directory for another repository says so, instead of "already running for
// this repository".
const repositoryPath = "/cairn/v1/repository"

func repositoryHandler(svc *gateway.Service) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, svc.Location())
	})
}

// socketRepository asks the process on sock which repository it serves; "" when it does not
// say (an older cairn) or does not answer.
func socketRepository(sock string) string {
	client := socketClient(sock)
	client.Timeout = 2 * time.Second
	resp, err := client.Get("http://cairn" + repositoryPath)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// socketClient is an HTTP client of the cairn process listening on the unix socket sock.
func socketClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// socketAlive reports whether something answers on a unix socket.
func socketAlive(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var errGatewayRunning = errors.New("a gateway is already running for this repository")
