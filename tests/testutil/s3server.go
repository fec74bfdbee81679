package testutil

import (
	"bytes"
	"context"
	"go/build"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Server is a real versitygw S3 gateway run as a child process over a posix directory, on
// 127.0.0.1. It is stopped in t.Cleanup; Stop and Start let a test take it away and bring it
// back on the same address and directory (a server that goes down in the middle of a backup).
type S3Server struct {
	// Endpoint is "http://127.0.0.1:PORT".
	Endpoint string
	// AccessKey and SecretKey are the root credentials the server was started with.
	AccessKey, SecretKey string
	// Bucket exists when StartS3 returns.
	Bucket string
	// Dir is the posix directory holding the buckets.
	Dir string
	// VersionDir holds the old versions of objects when the server keeps versions (an
	// object-locked bucket needs them; see WithObjectLock); "" otherwise.
	VersionDir string

	t    testing.TB
	bin  string
	addr string

	logFile string // the server's output, shown when it fails to start

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// S3Bucket is the bucket StartS3 creates.
const S3Bucket = "cairn-test"

// VersitygwPath returns the versitygw binary from PATH or $(go env GOPATH)/bin, or "" when
// neither has it.
func VersitygwPath() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(dir, "bin", "versitygw")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// S3Option changes how StartS3 sets the server up.
type S3Option func(*s3Options)

type s3Options struct {
	objectLock        bool
	dir               string
	access, secretKey string
}

// WithKeys starts the server with these credentials instead of the usual test ones: a second
// S3 service that the first one's keys do not open.
func WithKeys(access, secret string) S3Option {
	return func(o *s3Options) { o.access, o.secretKey = access, secret }
}

// WithDataDir keeps the server's objects in dir (a file system a test can fill) instead of a
// new temp directory.
func WithDataDir(dir string) S3Option { return func(o *s3Options) { o.dir = dir } }

// WithObjectLock starts the server with versioning (versitygw posix --versioning-dir) and
// creates S3Bucket with S3 Object Lock enabled, as a bucket for immutable backups is.
func WithObjectLock() S3Option { return func(o *s3Options) { o.objectLock = true } }

// StartS3 starts versitygw on a free port of 127.0.0.1 with a posix backend in a temp
// directory, waits until it answers, and creates S3Bucket. Without versitygw it skips (see
// Skip). The server is killed, with its process group, when the test ends.
func StartS3(t testing.TB, opts ...S3Option) *S3Server {
	t.Helper()
	var o s3Options
	for _, opt := range opts {
		opt(&o)
	}
	bin := VersitygwPath()
	if bin == "" {
		Skip(t, "needs versitygw in PATH or GOPATH/bin: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
	}
	s := &S3Server{
		AccessKey: "cairntestaccess",
		SecretKey: "cairntestsecret0123456789",
		Bucket:    S3Bucket,
		Dir:       t.TempDir(),
		t:         t,
		bin:       bin,
		addr:      freeAddr(t),
		logFile:   filepath.Join(t.TempDir(), "versitygw.log"),
	}
	if o.dir != "" {
		s.Dir = o.dir
	}
	if o.access != "" {
		s.AccessKey, s.SecretKey = o.access, o.secretKey
	}
	if o.objectLock {
		s.VersionDir = t.TempDir()
	}
	s.Endpoint = "http://" + s.addr
	t.Cleanup(s.Stop)
	s.Start()
	if o.objectLock {
		s.CreateLockedBucket(s.Bucket)
	} else {
		s.CreateBucket(s.Bucket)
	}
	return s
}

// Args returns versitygw's command line (without the binary), for logs and reports.
func (s *S3Server) Args() []string {
	args := []string{"--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.addr, "--quiet", "posix"}
	if s.VersionDir != "" {
		args = append(args, "--versioning-dir", s.VersionDir)
	}
	return append(args, s.Dir)
}

// Start starts the server (again) on the same address and directory and waits until it
// answers. It fails the test if the server does not come up within 15 seconds.
func (s *S3Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	logf, err := os.Create(s.logFile)
	if err != nil {
		s.t.Fatalf("versitygw log: %v", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(s.bin, s.Args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so Stop reaches anything it starts; die with the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start versitygw: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(15 * time.Second)
	for {
		if s.answers() {
			return
		}
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("versitygw %v exited while starting: %s", s.Args(), s.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("versitygw on %s did not answer within 15s: %s", s.addr, s.output())
		}
	}
}

// Stop kills the server and its process group at once, as a crash or a pulled cable would,
// and waits for it to exit. Stopping a stopped server does nothing.
func (s *S3Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Restart stops and starts the server.
func (s *S3Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// Client returns a minio-go client with the root credentials.
func (s *S3Server) Client() *minio.Client {
	s.t.Helper()
	c, err := minio.New(s.addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		s.t.Fatalf("minio client for %s: %v", s.addr, err)
	}
	return c
}

// CreateBucket creates another bucket, without object lock.
func (s *S3Server) CreateBucket(name string) {
	s.t.Helper()
	s.makeBucket(name, minio.MakeBucketOptions{})
}

// CreateLockedBucket creates another bucket with S3 Object Lock enabled (and so versioning);
// the server must have been started WithObjectLock.
func (s *S3Server) CreateLockedBucket(name string) {
	s.t.Helper()
	if s.VersionDir == "" {
		s.t.Fatalf("create locked bucket %s: start the server WithObjectLock", name)
	}
	s.makeBucket(name, minio.MakeBucketOptions{ObjectLocking: true})
}

func (s *S3Server) makeBucket(name string, o minio.MakeBucketOptions) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, name, o); err != nil {
		s.t.Fatalf("create bucket %s on %s: %v", name, s.Endpoint, err)
	}
}

// answers reports whether the server responds to an S3 request (any HTTP answer counts).
func (s *S3Server) answers() bool {
	conn, err := net.DialTimeout("tcp", s.addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := minio.New(s.addr, &minio.Options{
		Creds:      credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		MaxRetries: 1,
	})
	if err != nil {
		return false
	}
	_, err = c.ListBuckets(ctx)
	return err == nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// output returns what the server printed.
func (s *S3Server) output() string {
	b, _ := os.ReadFile(s.logFile)
	return string(bytes.TrimSpace(b))
}
