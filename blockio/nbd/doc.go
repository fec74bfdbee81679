// Package nbd speaks the Network Block Device protocol (the NetworkBlockDevice/nbd project's
// doc/proto.md). wire.go holds the protocol itself, the constants and every message's
// encoding and decoding for both sides. client.go and source.go are a client that reads an
// export over TCP or a Unix socket, named by an NBD URI, with the fixed newstyle handshake,
// NBD_OPT_GO, structured replies and metadata contexts (base:allocation,
// qemu:dirty-bitmap:NAME), so a backup skips what the server reports as zeros and, for an
// incremental, reads only what a dirty bitmap marks. server.go is a read-only server of named
// exports (io-style readers with a hole map), with structured replies and base:allocation,
// so qemu-img, qemu and nbd-client read backups. The package knows nothing of backups or
// repositories: the server asks an Exports of its caller what a name means.
package nbd
