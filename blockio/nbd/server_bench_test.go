package nbd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkServerRandomRead: 4 KiB reads at random offsets, structured, through cairn's
// client, from 1 and 4 connections: the server's own cost per request (the export is memory).
func BenchmarkServerRandomRead(b *testing.B) {
	disk := newMemExport(64<<20, 12)
	sock := serve(b, "unix", memExports{"disk": disk})
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			var cs []*Client
			for range conns {
				c, err := Dial(context.Background(), "nbd+unix:///disk?socket="+sock, Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cs = append(cs, c)
			}
			b.SetBytes(4096)
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N / conns
			for i, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(i), 1))
					p := make([]byte, 4096)
					for range per {
						if _, err := c.ReadAt(p, r.Int64N(64<<20-4096)&^4095); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}
