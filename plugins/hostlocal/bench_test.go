package hostlocal_test

import (
	"fmt"
	"testing"
)

// BenchmarkAddDel measures one in-process ADD plus DEL with 0 and 2,000
// addresses already held in the network (the reference reads every one of
// them on each call).
func BenchmarkAddDel(b *testing.B) {
	for _, held := range []int{0, 2000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			e := newEnv(b, `"subnet":"10.128.0.0/16"`)
			for i := range held {
				e.mustAdd(fmt.Sprintf("held-%d", i))
			}
			for b.Loop() {
				e.mustAdd("bench")
				e.mustDel("bench", "eth0")
			}
			if n := len(e.files()); n != held {
				b.Fatalf("%d files after the benchmark, want %d", n, held)
			}
		})
	}
}
