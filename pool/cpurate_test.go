package pool

import (
	"math"
	"testing"
	"time"
)

// TestCPURate: the rate is over the window since the previous sample at
// least a second older (the first time: since the session was created).
func TestCPURate(t *testing.T) {
	s := &Session{created: time.Now().Add(-2 * time.Second)}
	near := func(got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 0.05 {
			t.Fatalf("rate %.3f, want %.2f", got, want)
		}
	}
	near(s.CPURate(time.Second), 0.5)            // 1 s of CPU in 2 s
	near(s.CPURate(1100*time.Millisecond), 0.55) // still since creation: the last sample is too new
	// A second on, with no more CPU used: the window is the last second.
	s.mu.Lock()
	s.cpuPrev.at, s.cpuLast.at = s.cpuPrev.at.Add(-time.Second), s.cpuLast.at.Add(-time.Second)
	s.mu.Unlock()
	near(s.CPURate(time.Second), 0)
	if got := s.CPURate(0); got != 0 {
		t.Fatalf("a counter that went back: rate %v", got)
	}
}
