package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// Export is one read-only export: its bytes and where its data is. NextData returns the next
// extent at or after off that is not a hole, [start, end), and io.EOF past the last data;
// repo.Image is one.
type Export interface {
	Size() int64
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	NextData(ctx context.Context, off int64) (start, end int64, err error)
}

// Exports resolves the names clients ask for. Lookup returns an error wrapping
// ErrUnknownExport for a name it does not serve (or will not serve to this client); List
// returns the names NBD_OPT_LIST shows, or an error to refuse the listing.
type Exports interface {
	Lookup(ctx context.Context, name string) (Export, error)
	List(ctx context.Context) ([]string, error)
}

// ErrUnknownExport: no export of that name.
var ErrUnknownExport = errors.New("no such export")

// Server limits.
const (
	// MaxRequest is the largest read served; a larger one gets EINVAL, and a larger write
	// closes the connection. Block status may ask about any length: its reply is bounded by
	// maxDescriptors instead.
	MaxRequest = 32 << 20
	// connBudget bounds the read buffers of one connection's requests in flight.
	connBudget = MaxRequest + 8<<20
	// serverBudget bounds the read buffers of every connection's requests in flight: without
	// it, each connection a client opens holds up to connBudget more.
	serverBudget = 8 * connBudget
	// connRequests bounds one connection's requests in flight.
	connRequests = 16
	// maxOptionLen bounds one option's data during the handshake.
	maxOptionLen = 64 << 10
	// maxDescriptors bounds one block status reply; the client asks again for the rest.
	maxDescriptors = 1 << 14
	// handshakeTimeout bounds the negotiation; the transmission phase has no idle timeout
	// (a VM started from an export may idle for hours).
	handshakeTimeout = 30 * time.Second
	// allocationID is base:allocation's context id, the only context served.
	allocationID = 1
)

// replyTimeout bounds the writing of one reply: a client that stops reading its replies
// would otherwise hold its requests' share of the server's budget for ever. A variable for
// tests.
var replyTimeout = 2 * time.Minute

// transmitFlags: read-only, flush is a no-op that clients may send, and several
// connections may serve one client (nothing is ever written, so they are consistent).
const transmitFlags = FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn

// Server serves exports over NBD read-only: fixed newstyle handshake, structured replies
// (holes as NBD_REPLY_TYPE_OFFSET_HOLE) and base:allocation block status. Each connection has
// one goroutine reading requests, up to connRequests goroutines serving them within a byte
// budget (its own and the server's), and replies written whole under one lock.
type Server struct {
	exports Exports
	log     *slog.Logger
	budget  *semaphore.Weighted // serverBudget, shared by every connection

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewServer returns a server of exports; log gets connection errors (nil discards).
func NewServer(exports Exports, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{exports: exports, log: log, budget: semaphore.NewWeighted(serverBudget), conns: map[net.Conn]struct{}{}}
}

// Serve accepts connections on l until ctx ends, then closes l and every connection and
// returns once their goroutines are gone.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	var err error
	backoff := time.Duration(0)
	for {
		var c net.Conn
		c, err = l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like pass: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			break
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.ServeConn(ctx, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
	s.wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("nbd server: accept: %w", err)
}

// ServeConn serves one client on c until it disconnects or breaks the protocol, and closes c.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	sc := &conn{s: s, c: c}
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	name, ex, err := sc.negotiate(ctx)
	if err != nil {
		if !errors.Is(err, errAbort) && !errors.Is(err, io.EOF) && ctx.Err() == nil {
			s.log.Warn("nbd handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	_ = c.SetDeadline(time.Time{})
	s.log.Debug("nbd client connected", "remote", c.RemoteAddr().String(), "export", logName(name))
	if err := sc.transmit(ctx, ex); err != nil && ctx.Err() == nil {
		s.log.Warn("nbd connection closed", "remote", c.RemoteAddr().String(), "export", logName(name), "err", err)
	}
}

// logName is an export name as logs may show it: what comes before an '@' can be a credential
// (cairn's gateway takes TOKEN@NAME), so it is cut.
func logName(name string) string {
	if i := strings.LastIndexByte(name, '@'); i >= 0 {
		return "…@" + name[i+1:]
	}
	return name
}

// errAbort: the client ended the handshake with NBD_OPT_ABORT.
var errAbort = errors.New("client aborted the handshake")

// conn is one client. The reading goroutine owns everything but wmu's writes.
type conn struct {
	s          *Server
	c          net.Conn
	structured bool
	noZeroes   bool
	metaExport string // the export SET_META_CONTEXT named
	allocation bool   // base:allocation selected for metaExport

	wmu sync.Mutex // serializes replies in the transmission phase
}

// negotiate runs the handshake up to NBD_OPT_GO or NBD_OPT_EXPORT_NAME.
func (sc *conn) negotiate(ctx context.Context) (string, Export, error) {
	g := be.AppendUint64(nil, MagicNBD)
	g = be.AppendUint64(g, MagicOption)
	g = be.AppendUint16(g, FlagFixedNewstyle|FlagNoZeroes)
	if _, err := sc.c.Write(g); err != nil {
		return "", nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(sc.c, cf[:]); err != nil {
		return "", nil, err
	}
	flags := be.Uint32(cf[:])
	if flags&^(FlagCFixedNewstyle|FlagCNoZeroes) != 0 || flags&FlagCFixedNewstyle == 0 {
		return "", nil, protoErr("client flags %#x: fixed newstyle is required", flags)
	}
	sc.noZeroes = flags&FlagCNoZeroes != 0
	for {
		opt, data, err := sc.readOption()
		if err != nil {
			return "", nil, err
		}
		name, ex, err := sc.option(ctx, opt, data)
		if err != nil || ex != nil {
			return name, ex, err
		}
	}
}

// readOption reads one option; one with more than maxOptionLen bytes breaks the connection.
func (sc *conn) readOption() (uint32, []byte, error) {
	var h [optionHeaderLen]byte
	if _, err := io.ReadFull(sc.c, h[:]); err != nil {
		return 0, nil, err
	}
	if be.Uint64(h[:]) != MagicOption {
		return 0, nil, protoErr("option without the IHAVEOPT magic")
	}
	opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
	if n > maxOptionLen {
		return 0, nil, protoErr("option %d with %d bytes of data, more than %d", opt, n, maxOptionLen)
	}
	data := make([]byte, n)
	_, err := io.ReadFull(sc.c, data)
	return opt, data, err
}

func (sc *conn) reply(opt, typ uint32, data []byte) error {
	_, err := sc.c.Write(AppendOptionReply(nil, OptionReply{Option: opt, Type: typ, Data: data}))
	return err
}

func (sc *conn) replyErr(opt, typ uint32, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	return sc.reply(opt, typ, []byte(msg))
}

// option answers one option; it returns the export once the client chose one.
func (sc *conn) option(ctx context.Context, opt uint32, data []byte) (string, Export, error) {
	switch opt {
	case OptExportName:
		return sc.exportName(ctx, data)
	case OptAbort:
		_ = sc.reply(opt, RepAck, nil)
		return "", nil, errAbort
	case OptList:
		return "", nil, sc.list(ctx, data)
	case OptStructuredRepl:
		if len(data) != 0 {
			return "", nil, sc.replyErr(opt, RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		sc.structured = true
		return "", nil, sc.reply(opt, RepAck, nil)
	case OptListMetaCtx, OptSetMetaCtx:
		return "", nil, sc.metaContext(ctx, opt, data)
	case OptInfo, OptGo:
		return sc.info(ctx, opt, data)
	case OptStartTLS:
		return "", nil, sc.replyErr(opt, RepErrUnsup, "TLS is not supported: reach this server through a trusted network or an ssh tunnel")
	}
	return "", nil, sc.replyErr(opt, RepErrUnsup, "option %d is not supported", opt)
}

// lookup resolves a name; an error it returns breaks the connection, a refusal is sent.
func (sc *conn) lookup(ctx context.Context, opt uint32, name string) (Export, bool, error) {
	ex, err := sc.s.exports.Lookup(ctx, name)
	if err == nil {
		return ex, true, nil
	}
	typ := RepErrUnknown
	if !errors.Is(err, ErrUnknownExport) {
		typ = RepErrPlatform
		sc.s.log.Warn("nbd export lookup failed", "export", logName(name), "err", err)
	}
	return nil, false, sc.replyErr(opt, typ, "%v", err)
}

// exportName is NBD_OPT_EXPORT_NAME: no reply but the export's size and flags, and a
// refusal can only close the connection.
func (sc *conn) exportName(ctx context.Context, data []byte) (string, Export, error) {
	if len(data) > MaxStringLen {
		return "", nil, protoErr("export name of %d bytes", len(data))
	}
	name := string(data)
	ex, err := sc.s.exports.Lookup(ctx, name)
	if err != nil {
		return "", nil, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w", logName(name), err)
	}
	b := be.AppendUint64(nil, uint64(ex.Size()))
	b = be.AppendUint16(b, transmitFlags)
	if !sc.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	if _, err := sc.c.Write(b); err != nil {
		return "", nil, err
	}
	sc.selectContexts(name)
	return name, ex, nil
}

// selectContexts keeps base:allocation only if it was selected for the export chosen.
func (sc *conn) selectContexts(name string) {
	if sc.metaExport != name {
		sc.allocation = false
	}
}

func (sc *conn) list(ctx context.Context, data []byte) error {
	if len(data) != 0 {
		return sc.replyErr(OptList, RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	names, err := sc.s.exports.List(ctx)
	if err != nil {
		return sc.replyErr(OptList, RepErrPolicy, "%v", err)
	}
	for _, n := range names {
		if len(n) > MaxStringLen {
			continue
		}
		if err := sc.reply(OptList, RepServer, append(be.AppendUint32(nil, uint32(len(n))), n...)); err != nil {
			return err
		}
	}
	return sc.reply(OptList, RepAck, nil)
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT: base:allocation
// is the one context there is.
func (sc *conn) metaContext(ctx context.Context, opt uint32, data []byte) error {
	if opt == OptSetMetaCtx && !sc.structured {
		return sc.replyErr(opt, RepErrInvalid, "NBD_OPT_SET_META_CONTEXT needs structured replies first")
	}
	name, queries, err := DecodeMetaContextQuery(data)
	if err != nil {
		return sc.replyErr(opt, RepErrInvalid, "%v", err)
	}
	if _, ok, err := sc.lookup(ctx, opt, name); !ok {
		return err
	}
	match := false
	for _, q := range queries {
		match = match || q == ContextAllocation || (opt == OptListMetaCtx && q == "base:")
	}
	if opt == OptListMetaCtx && len(queries) == 0 {
		match = true
	}
	if opt == OptSetMetaCtx {
		sc.metaExport, sc.allocation = name, match
	}
	if match {
		if err := sc.reply(opt, RepMetaContext, AppendMetaContext(nil, allocationID, ContextAllocation)); err != nil {
			return err
		}
	}
	return sc.reply(opt, RepAck, nil)
}

// info answers NBD_OPT_INFO and NBD_OPT_GO; after GO the export is chosen.
func (sc *conn) info(ctx context.Context, opt uint32, data []byte) (string, Export, error) {
	name, infos, err := DecodeGo(data)
	if err != nil {
		return "", nil, sc.replyErr(opt, RepErrInvalid, "%v", err)
	}
	ex, ok, err := sc.lookup(ctx, opt, name)
	if !ok {
		return "", nil, err
	}
	if err := sc.reply(opt, RepInfo, AppendInfoExport(nil, uint64(ex.Size()), transmitFlags)); err != nil {
		return "", nil, err
	}
	// Block sizes are sent unasked too: a client that knows them keeps requests within
	// MaxRequest, one that does not ignores them.
	if err := sc.reply(opt, RepInfo, AppendInfoBlockSize(nil, 1, 4096, MaxRequest)); err != nil {
		return "", nil, err
	}
	for _, i := range infos {
		if i == InfoName {
			if err := sc.reply(opt, RepInfo, append(be.AppendUint16(nil, InfoName), name...)); err != nil {
				return "", nil, err
			}
		}
	}
	if err := sc.reply(opt, RepAck, nil); err != nil {
		return "", nil, err
	}
	if opt == OptInfo {
		return "", nil, nil
	}
	sc.selectContexts(name)
	return name, ex, nil
}

// transmit serves requests until NBD_CMD_DISC, an error or ctx's end; it returns once every
// request it started has replied.
func (sc *conn) transmit(ctx context.Context, ex Export) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	budget := semaphore.NewWeighted(connBudget)
	slots := make(chan struct{}, connRequests)
	hdr := make([]byte, RequestLen)
	for {
		if _, err := io.ReadFull(sc.c, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		q, err := DecodeRequest(hdr)
		if err != nil {
			return err
		}
		switch q.Type {
		case CmdDisc:
			return nil
		case CmdWrite:
			if q.Length > MaxRequest {
				return protoErr("write of %d bytes, more than %d", q.Length, MaxRequest)
			}
			if _, err := io.CopyN(io.Discard, sc.c, int64(q.Length)); err != nil {
				return err
			}
			if err := sc.fail(q, EPERM, "the export is read-only"); err != nil {
				return err
			}
		case CmdTrim, CmdWriteZeroes:
			if err := sc.fail(q, EPERM, "the export is read-only"); err != nil {
				return err
			}
		case CmdFlush:
			if err := sc.done(q); err != nil {
				return err
			}
		case CmdRead, CmdBlockStatus:
			if msg := sc.check(q, ex); msg != "" {
				if err := sc.fail(q, EINVAL, msg); err != nil {
					return err
				}
				continue
			}
			weight := int64(4096)
			if q.Type == CmdRead {
				weight += int64(q.Length)
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			if err := budget.Acquire(ctx, weight); err != nil {
				<-slots
				return err
			}
			if err := sc.s.budget.Acquire(ctx, weight); err != nil {
				budget.Release(weight)
				<-slots
				return err
			}
			wg.Add(1)
			go func() {
				defer func() { sc.s.budget.Release(weight); budget.Release(weight); <-slots; wg.Done() }()
				var err error
				if q.Type == CmdRead {
					err = sc.read(ctx, q, ex)
				} else {
					err = sc.blockStatus(ctx, q, ex)
				}
				if err != nil {
					sc.c.Close() // a reply that cannot be written ends the connection
				}
			}()
		default:
			if err := sc.fail(q, EINVAL, fmt.Sprintf("command %d is not supported", q.Type)); err != nil {
				return err
			}
		}
	}
}

// check returns why a read or block status request cannot be served, or "".
func (sc *conn) check(q Request, ex Export) string {
	switch {
	case q.Length == 0:
		return "request of length 0"
	case q.Type == CmdRead && q.Length > MaxRequest:
		return fmt.Sprintf("read of %d bytes, more than %d", q.Length, MaxRequest)
	case q.Offset > uint64(ex.Size()) || uint64(q.Length) > uint64(ex.Size())-q.Offset:
		return fmt.Sprintf("request of %d bytes at %d beyond the export's %d bytes", q.Length, q.Offset, ex.Size())
	case q.Type == CmdBlockStatus && !sc.allocation:
		return "block status without base:allocation selected"
	}
	return ""
}

// send writes one reply whole.
func (sc *conn) send(bufs ...[]byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_ = sc.c.SetWriteDeadline(time.Now().Add(replyTimeout))
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(sc.c)
	return err
}

// done answers a request that succeeded with no data.
func (sc *conn) done(q Request) error {
	if sc.structured {
		return sc.send(AppendReplyHeader(nil, ReplyHeader{Structured: true, Flags: ReplyFlagDone, Type: ReplyNone, Cookie: q.Cookie}))
	}
	return sc.send(AppendReplyHeader(nil, ReplyHeader{Cookie: q.Cookie}))
}

// fail answers a request with an error.
func (sc *conn) fail(q Request, errno uint32, msg string) error {
	if !sc.structured {
		return sc.send(AppendReplyHeader(nil, ReplyHeader{Error: errno, Cookie: q.Cookie}))
	}
	p := AppendErrorChunk(nil, ErrorChunk{Errno: errno, Message: msg})
	h := AppendReplyHeader(nil, ReplyHeader{Structured: true, Flags: ReplyFlagDone, Type: ReplyError,
		Cookie: q.Cookie, Length: uint32(len(p))})
	return sc.send(h, p)
}

// readBufs hold read replies: a small class for the 4-64 KiB reads of random access, a large
// one for sequential reads, so a 4 KiB read never clears a megabyte. Larger reads allocate.
var readBufs = [2]struct {
	size int
	pool sync.Pool
}{{size: 64 << 10}, {size: 1 << 20}}

// getBuf returns a buffer of n bytes and what gives it back.
func getBuf(n int) ([]byte, func()) {
	for i := range readBufs {
		c := &readBufs[i]
		if n <= c.size {
			bp, _ := c.pool.Get().(*[]byte)
			if bp == nil {
				b := make([]byte, c.size)
				bp = &b
			}
			return (*bp)[:n], func() { c.pool.Put(bp) }
		}
	}
	return make([]byte, n), func() {}
}

// read answers NBD_CMD_READ: holes as NBD_REPLY_TYPE_OFFSET_HOLE chunks and data as
// NBD_REPLY_TYPE_OFFSET_DATA chunks when structured, else the bytes with holes as zeros.
func (sc *conn) read(ctx context.Context, q Request, ex Export) error {
	buf, put := getBuf(int(q.Length))
	defer put()
	off, end := int64(q.Offset), int64(q.Offset)+int64(q.Length)
	var data [][2]int64 // data extents within the request
	if sc.structured {
		var upto int64
		var err error
		if data, upto, err = dataExtents(ctx, ex, off, end, maxDescriptors); err != nil {
			return sc.readFailed(q, err)
		}
		if upto < end { // too fragmented to describe: the rest goes as data, holes as zeros
			data = append(data, [2]int64{upto, end})
		}
	} else {
		data = [][2]int64{{off, end}}
	}
	for _, d := range data {
		// Only the export's own end of volume, with every byte read, is no failure: an error
		// that merely wraps io.EOF (a pack cut short, read through a file the backend opened
		// before) is a block that could not be read, and the buffer holds no data there
		// [TestNBDReadAtTheEndFailsOnAPackCutShort].
		if n, err := ex.ReadAtContext(ctx, buf[d[0]-off:d[1]-off], d[0]); err != nil && !(err == io.EOF && int64(n) == d[1]-d[0]) {
			return sc.readFailed(q, err)
		}
	}
	if !sc.structured {
		return sc.send(AppendReplyHeader(nil, ReplyHeader{Cookie: q.Cookie}), buf)
	}
	// Chunks in order: data and holes alternate; the last carries the done flag.
	var bufs [][]byte
	at := off
	chunk := func(typ uint16, start, stop int64) {
		flags := uint16(0)
		if stop == end {
			flags = ReplyFlagDone
		}
		if typ == ReplyOffsetHole {
			p := AppendOffsetHole(nil, uint64(start), uint32(stop-start))
			bufs = append(bufs, AppendReplyHeader(nil, ReplyHeader{Structured: true, Flags: flags, Type: typ, Cookie: q.Cookie, Length: uint32(len(p))}), p)
			return
		}
		h := AppendReplyHeader(nil, ReplyHeader{Structured: true, Flags: flags, Type: typ, Cookie: q.Cookie, Length: uint32(8 + stop - start)})
		bufs = append(bufs, be.AppendUint64(h, uint64(start)), buf[start-off:stop-off])
	}
	for _, d := range data {
		if d[0] > at {
			chunk(ReplyOffsetHole, at, d[0])
		}
		chunk(ReplyOffsetData, d[0], d[1])
		at = d[1]
	}
	if at < end {
		chunk(ReplyOffsetHole, at, end)
	}
	return sc.send(bufs...)
}

// readFailed answers a read that failed with EIO, and logs why (the backup and offset).
func (sc *conn) readFailed(q Request, err error) error {
	sc.s.log.Error("nbd read failed", "remote", sc.c.RemoteAddr().String(), "offset", q.Offset, "length", q.Length, "err", err)
	return sc.fail(q, EIO, err.Error())
}

// dataExtents returns the extents of [off, end) that hold data, in order, and where it
// stopped looking: end, or the start of the gap after the limit-th extent.
func dataExtents(ctx context.Context, ex Export, off, end int64, limit int) (out [][2]int64, upto int64, err error) {
	at := off
	for at < end {
		if len(out) == limit {
			return out, at, nil
		}
		s, e, err := ex.NextData(ctx, at)
		if errors.Is(err, io.EOF) || (err == nil && s >= end) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		s, e = max(s, at), min(e, end)
		if e <= s {
			return nil, 0, fmt.Errorf("export's data extent [%d, %d) at %d makes no progress", s, e, at)
		}
		if n := len(out); n > 0 && out[n-1][1] == s {
			out[n-1][1] = e
		} else {
			out = append(out, [2]int64{s, e})
		}
		at = e
	}
	return out, end, nil
}

// blockStatus answers NBD_CMD_BLOCK_STATUS for base:allocation: data extents have flags 0,
// holes are unallocated and read as zeros.
func (sc *conn) blockStatus(ctx context.Context, q Request, ex Export) error {
	off, end := int64(q.Offset), int64(q.Offset)+int64(q.Length)
	limit := maxDescriptors / 2
	if q.Flags&CmdFlagReqOne != 0 {
		limit = 1
	}
	data, upto, err := dataExtents(ctx, ex, off, end, limit)
	if err != nil {
		return sc.readFailed(q, err)
	}
	end = upto // the client asks again for what this reply does not cover
	var ds []Descriptor
	at := off
	for _, d := range data {
		if d[0] > at {
			ds = append(ds, Descriptor{Length: uint32(d[0] - at), Flags: StateHole | StateZero})
		}
		ds = append(ds, Descriptor{Length: uint32(d[1] - d[0])})
		at = d[1]
	}
	if at < end {
		ds = append(ds, Descriptor{Length: uint32(end - at), Flags: StateHole | StateZero})
	}
	if q.Flags&CmdFlagReqOne != 0 {
		ds = ds[:1]
	}
	p := AppendBlockStatus(nil, allocationID, ds)
	h := AppendReplyHeader(nil, ReplyHeader{Structured: true, Flags: ReplyFlagDone, Type: ReplyBlockStatus,
		Cookie: q.Cookie, Length: uint32(len(p))})
	return sc.send(h, p)
}
