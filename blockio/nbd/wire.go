package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic numbers.
const (
	MagicNBD             uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	MagicOption          uint64 = 0x49484156454F5054 // "IHAVEOPT"
	MagicOldstyle        uint64 = 0x00420281861253
	MagicOptionReply     uint64 = 0x3e889045565a9
	MagicRequest         uint32 = 0x25609513
	MagicSimpleReply     uint32 = 0x67446698
	MagicStructuredReply uint32 = 0x668e33ef
)

// Handshake flags (server) and client flags.
const (
	FlagFixedNewstyle  uint16 = 1 << 0
	FlagNoZeroes       uint16 = 1 << 1
	FlagCFixedNewstyle uint32 = 1 << 0
	FlagCNoZeroes      uint32 = 1 << 1
)

// Transmission flags.
const (
	FlagHasFlags         uint16 = 1 << 0
	FlagReadOnly         uint16 = 1 << 1
	FlagSendFlush        uint16 = 1 << 2
	FlagSendFUA          uint16 = 1 << 3
	FlagRotational       uint16 = 1 << 4
	FlagSendTrim         uint16 = 1 << 5
	FlagSendWriteZeroes  uint16 = 1 << 6
	FlagSendDF           uint16 = 1 << 7
	FlagCanMultiConn     uint16 = 1 << 8
	FlagSendResize       uint16 = 1 << 9
	FlagSendCache        uint16 = 1 << 10
	FlagSendFastZero     uint16 = 1 << 11
	FlagBlockStatPayload uint16 = 1 << 12
)

// Options.
const (
	OptExportName     uint32 = 1
	OptAbort          uint32 = 2
	OptList           uint32 = 3
	OptStartTLS       uint32 = 5
	OptInfo           uint32 = 6
	OptGo             uint32 = 7
	OptStructuredRepl uint32 = 8
	OptListMetaCtx    uint32 = 9
	OptSetMetaCtx     uint32 = 10
)

// Option reply types; errors have bit 31 set.
const (
	RepAck             uint32 = 1
	RepServer          uint32 = 2
	RepInfo            uint32 = 3
	RepMetaContext     uint32 = 4
	RepErrUnsup        uint32 = 1<<31 + 1
	RepErrPolicy       uint32 = 1<<31 + 2
	RepErrInvalid      uint32 = 1<<31 + 3
	RepErrPlatform     uint32 = 1<<31 + 4
	RepErrTLSReqd      uint32 = 1<<31 + 5
	RepErrUnknown      uint32 = 1<<31 + 6
	RepErrShutdown     uint32 = 1<<31 + 7
	RepErrBlockSizeReq uint32 = 1<<31 + 8
	RepErrTooBig       uint32 = 1<<31 + 9
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	InfoExport      uint16 = 0
	InfoName        uint16 = 1
	InfoDescription uint16 = 2
	InfoBlockSize   uint16 = 3
)

// Commands and command flags.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7

	CmdFlagFUA    uint16 = 1 << 0
	CmdFlagNoHole uint16 = 1 << 1
	CmdFlagDF     uint16 = 1 << 2
	CmdFlagReqOne uint16 = 1 << 3
)

// Structured reply flags and types; error types have bit 15 set.
const (
	ReplyFlagDone uint16 = 1 << 0

	ReplyNone        uint16 = 0
	ReplyOffsetData  uint16 = 1
	ReplyOffsetHole  uint16 = 2
	ReplyBlockStatus uint16 = 5
	ReplyError       uint16 = 1<<15 + 1
	ReplyErrorOffset uint16 = 1<<15 + 2
)

// Metadata context states.
const (
	StateHole  uint32 = 1 << 0 // base:allocation: not allocated
	StateZero  uint32 = 1 << 1 // base:allocation: reads as zeros
	StateDirty uint32 = 1 << 0 // qemu:dirty-bitmap:NAME: written since the bitmap began
)

// Metadata context names.
const (
	ContextAllocation   = "base:allocation"
	ContextBitmapPrefix = "qemu:dirty-bitmap:"
)

// Error values carried in replies (errno values).
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// Sizes of fixed parts.
const (
	RequestLen           = 28
	SimpleReplyLen       = 16
	StructuredHeaderLen  = 20
	optionHeaderLen      = 16
	optionReplyHeaderLen = 20
	// MaxStringLen is the protocol's limit on names and messages.
	MaxStringLen = 4096
	// MaxOptionData bounds what either side accepts as one option or option reply.
	MaxOptionData = 1 << 20
	// MaxBlockStatusPayload bounds a block status chunk: 2^20 descriptors and the context id.
	MaxBlockStatusPayload = 4 + 8<<20
)

// ErrProtocol: the peer sent something the protocol does not allow; the connection is unusable.
var ErrProtocol = errors.New("nbd protocol violation")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

var be = binary.BigEndian

// AppendOption encodes an option request: IHAVEOPT, the option, its data.
func AppendOption(dst []byte, opt uint32, data []byte) []byte {
	dst = be.AppendUint64(dst, MagicOption)
	dst = be.AppendUint32(dst, opt)
	dst = be.AppendUint32(dst, uint32(len(data)))
	return append(dst, data...)
}

// ReadOption reads an option request (the server's side), refusing data over max bytes.
func ReadOption(r io.Reader, max int) (opt uint32, data []byte, err error) {
	var h [optionHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if be.Uint64(h[:]) != MagicOption {
		return 0, nil, protoErr("option without the IHAVEOPT magic")
	}
	opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
	if int64(n) > int64(max) {
		return opt, nil, protoErr("option %d with %d bytes of data", opt, n)
	}
	data = make([]byte, n)
	_, err = io.ReadFull(r, data)
	return opt, data, err
}

// OptionReply is the server's answer to an option.
type OptionReply struct {
	Option uint32
	Type   uint32
	Data   []byte
}

// IsError reports whether the reply is an error (bit 31).
func (o OptionReply) IsError() bool { return o.Type&(1<<31) != 0 }

// AppendOptionReply encodes an option reply.
func AppendOptionReply(dst []byte, o OptionReply) []byte {
	dst = be.AppendUint64(dst, MagicOptionReply)
	dst = be.AppendUint32(dst, o.Option)
	dst = be.AppendUint32(dst, o.Type)
	dst = be.AppendUint32(dst, uint32(len(o.Data)))
	return append(dst, o.Data...)
}

// ReadOptionReply reads one option reply, refusing data over max bytes.
func ReadOptionReply(r io.Reader, max int) (OptionReply, error) {
	var h [optionReplyHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return OptionReply{}, err
	}
	if be.Uint64(h[:]) != MagicOptionReply {
		return OptionReply{}, protoErr("option reply without its magic")
	}
	o := OptionReply{Option: be.Uint32(h[8:]), Type: be.Uint32(h[12:])}
	n := be.Uint32(h[16:])
	if int64(n) > int64(max) {
		return o, protoErr("option reply of %d bytes", n)
	}
	o.Data = make([]byte, n)
	if _, err := io.ReadFull(r, o.Data); err != nil {
		return o, err
	}
	return o, nil
}

// AppendGo encodes the data of NBD_OPT_GO and NBD_OPT_INFO: export name and information
// requests.
func AppendGo(dst []byte, export string, infos ...uint16) []byte {
	dst = be.AppendUint32(dst, uint32(len(export)))
	dst = append(dst, export...)
	dst = be.AppendUint16(dst, uint16(len(infos)))
	for _, i := range infos {
		dst = be.AppendUint16(dst, i)
	}
	return dst
}

// DecodeGo decodes the data of NBD_OPT_GO and NBD_OPT_INFO.
func DecodeGo(p []byte) (export string, infos []uint16, err error) {
	if len(p) < 6 {
		return "", nil, protoErr("NBD_OPT_GO of %d bytes", len(p))
	}
	n := be.Uint32(p)
	if int64(n) > int64(len(p)-6) || n > MaxStringLen {
		return "", nil, protoErr("NBD_OPT_GO export name of %d bytes in %d", n, len(p))
	}
	export, p = string(p[4:4+n]), p[4+n:]
	k := int(be.Uint16(p))
	if len(p) != 2+2*k {
		return "", nil, protoErr("NBD_OPT_GO with %d information requests in %d bytes", k, len(p)-2)
	}
	for i := range k {
		infos = append(infos, be.Uint16(p[2+2*i:]))
	}
	return export, infos, nil
}

// AppendMetaContextQuery encodes the data of NBD_OPT_SET_META_CONTEXT and
// NBD_OPT_LIST_META_CONTEXT: the export and the queries.
func AppendMetaContextQuery(dst []byte, export string, queries ...string) []byte {
	dst = be.AppendUint32(dst, uint32(len(export)))
	dst = append(dst, export...)
	dst = be.AppendUint32(dst, uint32(len(queries)))
	for _, q := range queries {
		dst = be.AppendUint32(dst, uint32(len(q)))
		dst = append(dst, q...)
	}
	return dst
}

// DecodeMetaContextQuery decodes the data of NBD_OPT_SET_META_CONTEXT.
func DecodeMetaContextQuery(p []byte) (export string, queries []string, err error) {
	str := func() (string, error) {
		if len(p) < 4 {
			return "", protoErr("meta context query truncated")
		}
		n := be.Uint32(p)
		if int64(n) > int64(len(p)-4) || n > MaxStringLen {
			return "", protoErr("meta context string of %d bytes in %d", n, len(p)-4)
		}
		s := string(p[4 : 4+n])
		p = p[4+n:]
		return s, nil
	}
	if export, err = str(); err != nil {
		return "", nil, err
	}
	if len(p) < 4 {
		return "", nil, protoErr("meta context query without a count")
	}
	k := be.Uint32(p)
	p = p[4:]
	if int64(k) > int64(len(p)/4) {
		return "", nil, protoErr("%d meta context queries in %d bytes", k, len(p))
	}
	for range k {
		q, err := str()
		if err != nil {
			return "", nil, err
		}
		queries = append(queries, q)
	}
	if len(p) != 0 {
		return "", nil, protoErr("%d bytes after the meta context queries", len(p))
	}
	return export, queries, nil
}

// AppendMetaContext encodes the data of NBD_REP_META_CONTEXT.
func AppendMetaContext(dst []byte, id uint32, name string) []byte {
	return append(be.AppendUint32(dst, id), name...)
}

// DecodeMetaContext decodes the data of NBD_REP_META_CONTEXT.
func DecodeMetaContext(p []byte) (id uint32, name string, err error) {
	if len(p) < 5 || len(p)-4 > MaxStringLen {
		return 0, "", protoErr("NBD_REP_META_CONTEXT of %d bytes", len(p))
	}
	return be.Uint32(p), string(p[4:]), nil
}

// Info is what NBD_REP_INFO replies say about an export; zero where not sent.
type Info struct {
	Size                          uint64
	Flags                         uint16
	HasExport                     bool
	Name, Description             string
	MinBlock, PrefBlock, MaxBlock uint32
}

// AppendInfoExport encodes an NBD_INFO_EXPORT reply's data.
func AppendInfoExport(dst []byte, size uint64, flags uint16) []byte {
	dst = be.AppendUint16(dst, InfoExport)
	dst = be.AppendUint64(dst, size)
	return be.AppendUint16(dst, flags)
}

// AppendInfoBlockSize encodes an NBD_INFO_BLOCK_SIZE reply's data.
func AppendInfoBlockSize(dst []byte, min, pref, max uint32) []byte {
	dst = be.AppendUint16(dst, InfoBlockSize)
	dst = be.AppendUint32(dst, min)
	dst = be.AppendUint32(dst, pref)
	return be.AppendUint32(dst, max)
}

// DecodeInfo merges one NBD_REP_INFO reply's data into in. Unknown types are ignored, as the
// protocol asks.
func DecodeInfo(p []byte, in *Info) error {
	if len(p) < 2 {
		return protoErr("NBD_REP_INFO of %d bytes", len(p))
	}
	t, p := be.Uint16(p), p[2:]
	switch t {
	case InfoExport:
		if len(p) != 10 {
			return protoErr("NBD_INFO_EXPORT of %d bytes", len(p)+2)
		}
		in.Size, in.Flags, in.HasExport = be.Uint64(p), be.Uint16(p[8:]), true
	case InfoName, InfoDescription:
		if len(p) > MaxStringLen {
			return protoErr("NBD_INFO %d string of %d bytes", t, len(p))
		}
		if t == InfoName {
			in.Name = string(p)
		} else {
			in.Description = string(p)
		}
	case InfoBlockSize:
		if len(p) != 12 {
			return protoErr("NBD_INFO_BLOCK_SIZE of %d bytes", len(p)+2)
		}
		minB, pref, maxB := be.Uint32(p), be.Uint32(p[4:]), be.Uint32(p[8:])
		if minB == 0 || minB&(minB-1) != 0 || minB > 1<<16 || pref&(pref-1) != 0 || pref < minB || maxB < pref {
			return protoErr("block sizes %d/%d/%d are not allowed", minB, pref, maxB)
		}
		in.MinBlock, in.PrefBlock, in.MaxBlock = minB, pref, maxB
	}
	return nil
}

// Request is a transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// AppendRequest encodes a request header (a write's data follows it).
func AppendRequest(dst []byte, q Request) []byte {
	dst = be.AppendUint32(dst, MagicRequest)
	dst = be.AppendUint16(dst, q.Flags)
	dst = be.AppendUint16(dst, q.Type)
	dst = be.AppendUint64(dst, q.Cookie)
	dst = be.AppendUint64(dst, q.Offset)
	return be.AppendUint32(dst, q.Length)
}

// DecodeRequest decodes a request header.
func DecodeRequest(p []byte) (Request, error) {
	if len(p) != RequestLen || be.Uint32(p) != MagicRequest {
		return Request{}, protoErr("request header of %d bytes or without its magic", len(p))
	}
	return Request{Flags: be.Uint16(p[4:]), Type: be.Uint16(p[6:]), Cookie: be.Uint64(p[8:]),
		Offset: be.Uint64(p[16:]), Length: be.Uint32(p[24:])}, nil
}

// ReplyHeader is a simple reply or the header of a structured reply chunk.
type ReplyHeader struct {
	Structured bool
	Error      uint32 // simple replies
	Flags      uint16 // structured chunks
	Type       uint16
	Cookie     uint64
	Length     uint32
}

// Done reports whether this is the last reply for its cookie.
func (h ReplyHeader) Done() bool { return !h.Structured || h.Flags&ReplyFlagDone != 0 }

// AppendReplyHeader encodes a simple reply or a structured chunk's header.
func AppendReplyHeader(dst []byte, h ReplyHeader) []byte {
	if !h.Structured {
		dst = be.AppendUint32(dst, MagicSimpleReply)
		dst = be.AppendUint32(dst, h.Error)
		return be.AppendUint64(dst, h.Cookie)
	}
	dst = be.AppendUint32(dst, MagicStructuredReply)
	dst = be.AppendUint16(dst, h.Flags)
	dst = be.AppendUint16(dst, h.Type)
	dst = be.AppendUint64(dst, h.Cookie)
	return be.AppendUint32(dst, h.Length)
}

// ReadReplyHeader reads a simple reply or a structured chunk's header.
func ReadReplyHeader(r io.Reader) (ReplyHeader, error) {
	var b [StructuredHeaderLen]byte
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return ReplyHeader{}, err
	}
	switch be.Uint32(b[:]) {
	case MagicSimpleReply:
		if _, err := io.ReadFull(r, b[4:SimpleReplyLen]); err != nil {
			return ReplyHeader{}, err
		}
		return ReplyHeader{Error: be.Uint32(b[4:]), Cookie: be.Uint64(b[8:])}, nil
	case MagicStructuredReply:
		if _, err := io.ReadFull(r, b[4:]); err != nil {
			return ReplyHeader{}, err
		}
		return ReplyHeader{Structured: true, Flags: be.Uint16(b[4:]), Type: be.Uint16(b[6:]),
			Cookie: be.Uint64(b[8:]), Length: be.Uint32(b[16:])}, nil
	}
	return ReplyHeader{}, protoErr("reply with magic %#x", be.Uint32(b[:]))
}

// AppendOffsetHole encodes an NBD_REPLY_TYPE_OFFSET_HOLE payload.
func AppendOffsetHole(dst []byte, off uint64, n uint32) []byte {
	return be.AppendUint32(be.AppendUint64(dst, off), n)
}

// DecodeOffsetHole decodes an NBD_REPLY_TYPE_OFFSET_HOLE payload.
func DecodeOffsetHole(p []byte) (off uint64, n uint32, err error) {
	if len(p) != 12 {
		return 0, 0, protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of %d bytes", len(p))
	}
	off, n = be.Uint64(p), be.Uint32(p[8:])
	if n == 0 {
		return 0, 0, protoErr("empty NBD_REPLY_TYPE_OFFSET_HOLE")
	}
	return off, n, nil
}

// ErrorChunk is an error a structured reply carries.
type ErrorChunk struct {
	Errno     uint32
	Message   string
	Offset    uint64
	HasOffset bool
}

// AppendErrorChunk encodes an error chunk's payload (NBD_REPLY_TYPE_ERROR, or _ERROR_OFFSET
// when e.HasOffset).
func AppendErrorChunk(dst []byte, e ErrorChunk) []byte {
	msg := e.Message
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	dst = be.AppendUint32(dst, e.Errno)
	dst = be.AppendUint16(dst, uint16(len(msg)))
	dst = append(dst, msg...)
	if e.HasOffset {
		dst = be.AppendUint64(dst, e.Offset)
	}
	return dst
}

// DecodeErrorChunk decodes the payload of an error chunk of type t. Types with bit 15 set that
// the protocol does not define still carry the error and message.
func DecodeErrorChunk(t uint16, p []byte) (ErrorChunk, error) {
	if len(p) < 6 {
		return ErrorChunk{}, protoErr("error chunk of %d bytes", len(p))
	}
	e := ErrorChunk{Errno: be.Uint32(p)}
	n := int(be.Uint16(p[4:]))
	if n > len(p)-6 || n > MaxStringLen {
		return ErrorChunk{}, protoErr("error message of %d bytes in %d", n, len(p)-6)
	}
	e.Message = string(p[6 : 6+n])
	rest := p[6+n:]
	if t == ReplyErrorOffset {
		if len(rest) != 8 {
			return ErrorChunk{}, protoErr("NBD_REPLY_TYPE_ERROR_OFFSET with %d bytes after the message", len(rest))
		}
		e.Offset, e.HasOffset = be.Uint64(rest), true
	} else if t == ReplyError && len(rest) != 0 {
		return ErrorChunk{}, protoErr("NBD_REPLY_TYPE_ERROR with %d bytes after the message", len(rest))
	}
	if e.Errno == 0 {
		return ErrorChunk{}, protoErr("error chunk with error 0")
	}
	return e, nil
}

// Descriptor is one extent of a block status reply.
type Descriptor struct {
	Length uint32
	Flags  uint32
}

// AppendBlockStatus encodes an NBD_REPLY_TYPE_BLOCK_STATUS payload.
func AppendBlockStatus(dst []byte, context uint32, ds []Descriptor) []byte {
	dst = be.AppendUint32(dst, context)
	for _, d := range ds {
		dst = be.AppendUint32(dst, d.Length)
		dst = be.AppendUint32(dst, d.Flags)
	}
	return dst
}

// DecodeBlockStatus decodes an NBD_REPLY_TYPE_BLOCK_STATUS payload: the context id and at
// least one descriptor, none of length zero.
func DecodeBlockStatus(p []byte) (context uint32, ds []Descriptor, err error) {
	if len(p) < 12 || (len(p)-4)%8 != 0 || len(p) > MaxBlockStatusPayload {
		return 0, nil, protoErr("NBD_REPLY_TYPE_BLOCK_STATUS of %d bytes", len(p))
	}
	context = be.Uint32(p)
	ds = make([]Descriptor, 0, (len(p)-4)/8)
	for q := p[4:]; len(q) > 0; q = q[8:] {
		d := Descriptor{Length: be.Uint32(q), Flags: be.Uint32(q[4:])}
		if d.Length == 0 {
			return 0, nil, protoErr("block status descriptor of length 0")
		}
		ds = append(ds, d)
	}
	return context, ds, nil
}

// ErrnoText names an NBD error value.
func ErrnoText(e uint32) string {
	switch e {
	case EPERM:
		return "operation not permitted"
	case EIO:
		return "input/output error"
	case ENOMEM:
		return "out of memory"
	case EINVAL:
		return "invalid argument"
	case ENOSPC:
		return "no space left"
	case EOVERFLOW:
		return "value too large"
	case ENOTSUP:
		return "operation not supported"
	case ESHUTDOWN:
		return "server shutting down"
	}
	return fmt.Sprintf("error %d", e)
}

// RepText names an option reply error.
func RepText(t uint32) string {
	switch t {
	case RepErrUnsup:
		return "option not supported"
	case RepErrPolicy:
		return "forbidden by the server's policy"
	case RepErrInvalid:
		return "invalid option"
	case RepErrPlatform:
		return "not supported on the server's platform"
	case RepErrTLSReqd:
		return "the server requires TLS"
	case RepErrUnknown:
		return "no such export"
	case RepErrShutdown:
		return "server shutting down"
	case RepErrBlockSizeReq:
		return "the server requires block size negotiation"
	case RepErrTooBig:
		return "request too big"
	}
	return fmt.Sprintf("reply type %#x", t)
}
