package blockio

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// ParseThinDelta reads what thin_delta (thin-provisioning-tools) prints for two thin devices
// of one pool, and returns the byte ranges of a size-byte volume that differ between them:
// the <different>, <left_only> and <right_only> ranges (a block mapped on one side only
// reads as zeros on the other). Ranges are in the pool's data blocks of data_block_size
// sectors; <same> ranges are skipped. The ranges are clipped to size, sorted and merged.
func ParseThinDelta(r io.Reader, size int64) (Changes, error) {
	dec := xml.NewDecoder(r)
	var block int64
	var ext []Extent
	sawSuper := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("thin_delta output: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "superblock":
			bs, err := attrInt(se, "data_block_size")
			if err != nil {
				return nil, err
			}
			if bs <= 0 || bs > 1<<21 {
				return nil, fmt.Errorf("thin_delta output: data_block_size %d sectors", bs)
			}
			block, sawSuper = bs*512, true
		case "different", "left_only", "right_only":
			if !sawSuper {
				return nil, fmt.Errorf("thin_delta output: <%s> before <superblock>", se.Name.Local)
			}
			begin, err := attrInt(se, "begin")
			if err != nil {
				return nil, err
			}
			length, err := attrInt(se, "length")
			if err != nil {
				return nil, err
			}
			if begin < 0 || length <= 0 {
				return nil, fmt.Errorf("thin_delta output: range begin=%d length=%d", begin, length)
			}
			blocks := (size + block - 1) / block
			if begin >= blocks {
				continue // beyond the volume: nothing to read there
			}
			end := min(begin+min(length, blocks), blocks) * block
			ext = append(ext, Extent{begin * block, min(end, size)})
		}
	}
	if !sawSuper {
		return nil, errors.New("thin_delta output: no <superblock>")
	}
	sort.Slice(ext, func(i, j int) bool { return ext[i].Start < ext[j].Start })
	var c Changes
	for _, e := range ext {
		c = c.add(e.Start, e.End)
	}
	return c, nil
}

// attrInt returns the attribute name of se, a decimal integer.
func attrInt(se xml.StartElement, name string) (int64, error) {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			n, err := strconv.ParseInt(a.Value, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("thin_delta output: <%s %s=%q>: not a number", se.Name.Local, name, a.Value)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("thin_delta output: <%s> has no %s", se.Name.Local, name)
}
