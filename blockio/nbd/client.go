package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Options choose what a client negotiates.
type Options struct {
	// MetaContexts are the metadata contexts to select (base:allocation,
	// qemu:dirty-bitmap:NAME); those the server does not offer are simply not granted.
	MetaContexts []string
	// DialTimeout bounds connecting and the handshake; 0 means 30 s.
	DialTimeout time.Duration
}

// Client is a connection to one export in the transmission phase. Requests from several
// goroutines are in flight at once; one goroutine reads every reply and hands each to its
// request by cookie.
type Client struct {
	conn       net.Conn
	export     string
	size       int64
	flags      uint16
	minBlock   uint32
	maxPayload uint32
	structured bool
	contexts   map[string]uint32 // granted context name -> id

	wmu sync.Mutex // serializes request writes

	mu      sync.Mutex // guards the fields below
	pending map[uint64]*call
	cookie  uint64
	err     error // set once the connection failed; every later request gets it
	closed  bool

	done chan struct{} // closed when the reply reader stops
}

// call is one request waiting for its replies. The reply reader owns it until it closes done.
type call struct {
	req     Request
	buf     []byte  // NBD_CMD_READ: where the data goes
	covered int64   // bytes of buf the replies filled or zeroed
	chunks  []chunk // the ranges of buf they filled or zeroed, sorted and disjoint
	status  map[uint32][]Descriptor
	err     error
	done    chan struct{}
}

// chunk is the range [at, end) of a read's buffer that one reply chunk answered.
type chunk struct{ at, end uint64 }

// cover notes that a reply chunk answered buf[at:at+n]. Chunks of one read must not overlap
// (the NBD protocol forbids it): one that did could leave part of the buffer unanswered while
// the count of answered bytes said every byte was, and stale bytes would pass for the volume's.
func (cl *call) cover(at, n uint64) error {
	end := at + n
	i := sort.Search(len(cl.chunks), func(i int) bool { return cl.chunks[i].end > at })
	if i < len(cl.chunks) && cl.chunks[i].at < end {
		return protoErr("reply chunks overlap at %d of the read of %d at %d", cl.req.Offset+max(at, cl.chunks[i].at), len(cl.buf), cl.req.Offset)
	}
	cl.chunks = append(cl.chunks, chunk{})
	copy(cl.chunks[i+1:], cl.chunks[i:])
	cl.chunks[i] = chunk{at, end}
	cl.covered += int64(n)
	return nil
}

// RemoteError is an error the server replied with.
type RemoteError struct {
	Errno   uint32
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message != "" {
		return ErrnoText(e.Errno) + ": " + e.Message
	}
	return ErrnoText(e.Errno)
}

// Dial connects to the export the NBD URI names and negotiates it read for reading.
func Dial(ctx context.Context, uri string, o Options) (*Client, error) {
	a, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			// Nothing serves there: the usual cause is a server that was never started or
			// has ended (qemu-nbd without --persistent ends with its first client).
			return nil, fmt.Errorf("connect to NBD server %s: %w: nothing serves the export there; start it (qemu-nbd --persistent, virsh backup-begin) or check the URI", a.Addr, err)
		}
		return nil, fmt.Errorf("connect to NBD server %s: %w", a.Addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	c := &Client{conn: conn, export: a.Export, pending: map[uint64]*call{}, contexts: map[string]uint32{},
		maxPayload: 32 << 20, minBlock: 1, done: make(chan struct{})}
	err = c.handshake(o)
	stop()
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return nil, fmt.Errorf("NBD export %q at %s: %w", a.Export, a.Addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	go c.readReplies()
	return c, nil
}

func (c *Client) handshake(o Options) error {
	var b [18]byte
	if _, err := io.ReadFull(c.conn, b[:16]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if be.Uint64(b[:]) != MagicNBD {
		return protoErr("greeting without NBDMAGIC: not an NBD server")
	}
	switch be.Uint64(b[8:]) {
	case MagicOption:
	case MagicOldstyle:
		return errors.New("the server speaks only the oldstyle handshake; cairn needs newstyle (qemu-nbd, nbdkit and nbd-server all do)")
	default:
		return protoErr("greeting without IHAVEOPT")
	}
	if _, err := io.ReadFull(c.conn, b[16:18]); err != nil {
		return err
	}
	hflags := be.Uint16(b[16:])
	if hflags&FlagFixedNewstyle == 0 {
		return errors.New("the server does not speak fixed newstyle negotiation")
	}
	cflags := FlagCFixedNewstyle
	if hflags&FlagNoZeroes != 0 {
		cflags |= FlagCNoZeroes
	}
	if _, err := c.conn.Write(be.AppendUint32(nil, cflags)); err != nil {
		return err
	}

	rep, err := c.option(OptStructuredRepl, nil)
	if err != nil {
		return err
	}
	c.structured = rep.Type == RepAck
	if len(o.MetaContexts) > 0 && c.structured {
		if err := c.setMetaContexts(o.MetaContexts); err != nil {
			return err
		}
	}
	return c.goExport()
}

// option sends an option and reads its single reply (an error reply is returned, not failed).
func (c *Client) option(opt uint32, data []byte) (OptionReply, error) {
	if _, err := c.conn.Write(AppendOption(nil, opt, data)); err != nil {
		return OptionReply{}, err
	}
	rep, err := ReadOptionReply(c.conn, MaxOptionData)
	if err != nil {
		return rep, err
	}
	if rep.Option != opt {
		return rep, protoErr("reply to option %d answers option %d", opt, rep.Option)
	}
	return rep, nil
}

func (c *Client) setMetaContexts(queries []string) error {
	if _, err := c.conn.Write(AppendOption(nil, OptSetMetaCtx, AppendMetaContextQuery(nil, c.export, queries...))); err != nil {
		return err
	}
	for {
		rep, err := ReadOptionReply(c.conn, MaxOptionData)
		if err != nil {
			return err
		}
		if rep.Option != OptSetMetaCtx {
			return protoErr("reply to NBD_OPT_SET_META_CONTEXT answers option %d", rep.Option)
		}
		switch {
		case rep.Type == RepAck:
			return nil
		case rep.Type == RepMetaContext:
			id, name, err := DecodeMetaContext(rep.Data)
			if err != nil {
				return err
			}
			c.contexts[name] = id
		case rep.IsError():
			clear(c.contexts) // a failed selection selects nothing
			return nil
		default:
			return protoErr("reply type %d to NBD_OPT_SET_META_CONTEXT", rep.Type)
		}
	}
}

func (c *Client) goExport() error {
	if _, err := c.conn.Write(AppendOption(nil, OptGo, AppendGo(nil, c.export, InfoBlockSize))); err != nil {
		return err
	}
	var in Info
	for {
		rep, err := ReadOptionReply(c.conn, MaxOptionData)
		if err != nil {
			return err
		}
		if rep.Option != OptGo {
			return protoErr("reply to NBD_OPT_GO answers option %d", rep.Option)
		}
		switch {
		case rep.Type == RepInfo:
			if err := DecodeInfo(rep.Data, &in); err != nil {
				return err
			}
			continue
		case rep.Type == RepAck:
		case rep.IsError():
			msg := RepText(rep.Type)
			if len(rep.Data) > 0 && len(rep.Data) <= MaxStringLen {
				msg += ": " + string(rep.Data)
			}
			return errors.New(msg)
		default:
			return protoErr("reply type %d to NBD_OPT_GO", rep.Type)
		}
		break
	}
	if !in.HasExport {
		return protoErr("NBD_OPT_GO succeeded without NBD_INFO_EXPORT")
	}
	if in.Size > 1<<62 {
		return protoErr("export of %d bytes", in.Size)
	}
	c.size, c.flags = int64(in.Size), in.Flags
	if in.MinBlock != 0 {
		c.minBlock, c.maxPayload = in.MinBlock, min(in.MaxBlock, 32<<20)
	}
	return nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadOnly reports whether the server exports read-only.
func (c *Client) ReadOnly() bool { return c.flags&FlagReadOnly != 0 }

// HasContext reports whether the server granted the named metadata context.
func (c *Client) HasContext(name string) bool { _, ok := c.contexts[name]; return ok }

// fail records the connection's first error and closes the connection; the reply reader
// then ends every pending request with it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.conn.Close()
}

// stop is how the reply reader ends: every pending request fails with the connection's first
// error, and no new one is accepted.
func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	calls := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	c.conn.Close()
	for _, cl := range calls {
		if cl.err == nil {
			cl.err = err
		}
		close(cl.done)
	}
}

// send registers a request and writes it.
func (c *Client) send(cl *call) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cl.req.Cookie = c.cookie
	cl.done = make(chan struct{})
	c.pending[cl.req.Cookie] = cl
	c.mu.Unlock()
	c.wmu.Lock()
	_, err := c.conn.Write(AppendRequest(make([]byte, 0, RequestLen), cl.req))
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("send request: %w", err))
		return err
	}
	return nil
}

// wait waits for a request's replies, or gives up on ctx: the connection is closed then (a
// reply that came later would have nowhere to go), and wait returns once the reader let go of
// the request's buffer.
func (c *Client) wait(ctx context.Context, cl *call) error {
	select {
	case <-cl.done:
		return cl.err
	case <-ctx.Done():
		c.fail(ctx.Err())
		<-cl.done
		return ctx.Err()
	}
}

// readReplies is the one goroutine that reads from the connection.
func (c *Client) readReplies() {
	defer close(c.done)
	for {
		h, err := ReadReplyHeader(c.conn)
		if err != nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				err = errors.New("connection closed")
			} else {
				err = fmt.Errorf("read reply: %w", err)
			}
			c.stop(err)
			return
		}
		c.mu.Lock()
		cl := c.pending[h.Cookie]
		c.mu.Unlock()
		if cl == nil {
			c.stop(protoErr("reply for cookie %d, which no request has", h.Cookie))
			return
		}
		if err := c.handle(cl, h); err != nil {
			c.stop(err)
			return
		}
		if h.Done() {
			if cl.err == nil && cl.req.Type == CmdRead && cl.covered != int64(len(cl.buf)) {
				cl.err = protoErr("read of %d bytes at %d answered with %d", len(cl.buf), cl.req.Offset, cl.covered)
			}
			c.mu.Lock()
			delete(c.pending, h.Cookie)
			c.mu.Unlock()
			close(cl.done)
		}
	}
}

// handle reads one reply's payload into its request. An error return breaks the connection;
// an error the server reports goes to the request.
func (c *Client) handle(cl *call, h ReplyHeader) error {
	if !h.Structured {
		if h.Error != 0 {
			cl.err = &RemoteError{Errno: h.Error}
			return nil
		}
		if cl.req.Type == CmdRead {
			if c.structured {
				return protoErr("simple reply to a read after structured replies were negotiated")
			}
			if _, err := io.ReadFull(c.conn, cl.buf); err != nil {
				return err
			}
			cl.covered = int64(len(cl.buf))
		}
		return nil
	}
	if !c.structured {
		return protoErr("structured reply that was not negotiated")
	}
	switch h.Type {
	case ReplyNone:
		if h.Length != 0 || !h.Done() {
			return protoErr("NBD_REPLY_TYPE_NONE of %d bytes or not last", h.Length)
		}
		return nil
	case ReplyOffsetData:
		if cl.req.Type != CmdRead || h.Length < 9 {
			return protoErr("NBD_REPLY_TYPE_OFFSET_DATA of %d bytes to command %d", h.Length, cl.req.Type)
		}
		var ob [8]byte
		if _, err := io.ReadFull(c.conn, ob[:]); err != nil {
			return err
		}
		start, n := be.Uint64(ob[:]), uint64(h.Length-8)
		if start < cl.req.Offset || start-cl.req.Offset+n > uint64(len(cl.buf)) {
			return protoErr("data at %d+%d outside the read of %d at %d", start, n, len(cl.buf), cl.req.Offset)
		}
		at := start - cl.req.Offset
		if err := cl.cover(at, n); err != nil {
			return err
		}
		if _, err := io.ReadFull(c.conn, cl.buf[at:at+n]); err != nil {
			return err
		}
		return nil
	case ReplyOffsetHole:
		p, err := c.payload(h, 12)
		if err != nil {
			return err
		}
		start, n, err := DecodeOffsetHole(p)
		if err != nil {
			return err
		}
		if cl.req.Type != CmdRead || start < cl.req.Offset || start-cl.req.Offset+uint64(n) > uint64(len(cl.buf)) {
			return protoErr("hole at %d+%d outside the read of %d at %d", start, n, len(cl.buf), cl.req.Offset)
		}
		at := start - cl.req.Offset
		if err := cl.cover(at, uint64(n)); err != nil {
			return err
		}
		clear(cl.buf[at : at+uint64(n)])
		return nil
	case ReplyBlockStatus:
		if cl.req.Type != CmdBlockStatus {
			return protoErr("block status reply to command %d", cl.req.Type)
		}
		p, err := c.payload(h, MaxBlockStatusPayload)
		if err != nil {
			return err
		}
		id, ds, err := DecodeBlockStatus(p)
		if err != nil {
			return err
		}
		if cl.status == nil {
			cl.status = map[uint32][]Descriptor{}
		}
		cl.status[id] = ds
		return nil
	}
	if h.Type&(1<<15) == 0 {
		return protoErr("structured reply of unknown type %d", h.Type)
	}
	p, err := c.payload(h, 6+MaxStringLen+8)
	if err != nil {
		return err
	}
	e, err := DecodeErrorChunk(h.Type, p)
	if err != nil {
		return err
	}
	if cl.err == nil {
		cl.err = &RemoteError{Errno: e.Errno, Message: e.Message}
	}
	return nil
}

// payload reads a chunk's payload of at most max bytes.
func (c *Client) payload(h ReplyHeader, max int) ([]byte, error) {
	if int64(h.Length) > int64(max) {
		return nil, protoErr("reply chunk type %d of %d bytes", h.Type, h.Length)
	}
	p := make([]byte, h.Length)
	_, err := io.ReadFull(c.conn, p)
	return p, err
}

// ReadAt reads len(p) bytes at off; requests larger than the server takes are split and sent
// at once. It is safe for concurrent use.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	return c.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that gives up when ctx ends.
func (c *Client) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read NBD export at negative offset %d", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	var tail error
	if rest := c.size - off; int64(len(p)) > rest {
		p, tail = p[:rest], io.EOF
	}
	var calls []*call
	for done := 0; done < len(p); {
		n := min(len(p)-done, int(c.maxPayload))
		cl := &call{req: Request{Type: CmdRead, Offset: uint64(off) + uint64(done), Length: uint32(n)}, buf: p[done : done+n]}
		if err := c.send(cl); err != nil {
			for _, sent := range calls { // they fail too, once the reader let go of p
				<-sent.done
			}
			return 0, fmt.Errorf("read NBD export at %d: %w", off, err)
		}
		calls = append(calls, cl)
		done += n
	}
	var first error
	for _, cl := range calls {
		if err := c.wait(ctx, cl); err != nil && first == nil {
			first = fmt.Errorf("read NBD export at %d: %w", cl.req.Offset, err)
		}
	}
	if first != nil {
		return 0, first
	}
	return len(p), tail
}

// BlockStatus asks for the named context's extents from off: at least one descriptor, the
// first starting at off, covering up to length bytes (the server may say less, or a little
// more).
func (c *Client) BlockStatus(ctx context.Context, context string, off int64, length uint32) ([]Descriptor, error) {
	id, ok := c.contexts[context]
	if !ok {
		return nil, fmt.Errorf("block status: the server did not grant context %s", context)
	}
	if off < 0 || off >= c.size || length == 0 {
		return nil, fmt.Errorf("block status of %d bytes at %d in an export of %d", length, off, c.size)
	}
	length = uint32(min(int64(length), c.size-off))
	cl := &call{req: Request{Type: CmdBlockStatus, Offset: uint64(off), Length: length}}
	if err := c.send(cl); err != nil {
		return nil, fmt.Errorf("block status at %d: %w", off, err)
	}
	if err := c.wait(ctx, cl); err != nil {
		return nil, fmt.Errorf("block status at %d: %w", off, err)
	}
	ds, ok := cl.status[id]
	if !ok {
		return nil, fmt.Errorf("block status at %d: %w", off, protoErr("no reply for context %s", context))
	}
	return ds, nil
}

// Close ends the session with NBD_CMD_DISC and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	broken := c.err != nil
	c.mu.Unlock()
	if !broken {
		c.wmu.Lock()
		_, _ = c.conn.Write(AppendRequest(nil, Request{Type: CmdDisc}))
		c.wmu.Unlock()
	}
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
