// Package nbd speaks the Network Block Device protocol (the NetworkBlockDevice/nbd project's
// doc/proto.md): a client that reads an export over TCP or a Unix socket, named by an NBD URI,
// with the fixed newstyle handshake, NBD_OPT_GO, structured replies and metadata contexts
// (base:allocation, qemu:dirty-bitmap:NAME), so a backup skips what the server reports as
// zeros and, for an incremental, reads only what a dirty bitmap marks. wire.go holds the
// protocol itself, the constants and every message's encoding and decoding for both sides,
// so a server can be built on it; client.go and source.go are the client. The package knows
// nothing of backups or repositories; it reads one export, a byte range at a time.
package nbd
