package gateway

import "time"

// SetFullCatchUpEveryForTest sets how often CatchUp runs the full catch-up, until the test
// ends.
func SetFullCatchUpEveryForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := fullCatchUpEvery
	fullCatchUpEvery = d
	t.Cleanup(func() { fullCatchUpEvery = old })
}
