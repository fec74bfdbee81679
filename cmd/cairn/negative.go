package main

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
)

// negativeInt decodes an integer flag, taking a negative number written as the next argument
// (--backups -1, as cinder's quota-update takes it) where kong would read "-1" as a short
// flag and refuse it. Everything else goes to kong's own mapper, with its messages; cairn
// has no short flag that is a digit, so nothing else changes meaning.
func negativeInt(bits int) kong.MapperFunc {
	std := kong.NewRegistry().RegisterDefaults().ForType(reflect.TypeOf(int64(0)))
	return func(ctx *kong.DecodeContext, target reflect.Value) error {
		t := ctx.Scan.Peek()
		if s, ok := t.Value.(string); ok && t.Type == kong.UntypedToken && strings.HasPrefix(s, "-") {
			if n, err := strconv.ParseInt(s, 10, bits); err == nil {
				ctx.Scan.Pop()
				target.SetInt(n)
				return nil
			}
		}
		return std.Decode(ctx, target)
	}
}
