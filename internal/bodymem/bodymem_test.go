package bodymem

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestBudget(t *testing.T) {
	b := New(100)
	r1 := b.NewReader(strings.NewReader(strings.Repeat("x", 60)))
	if got, err := io.ReadAll(r1); err != nil || len(got) != 60 || b.Used() != 60 {
		t.Fatalf("first body: %d bytes, %v, used %d", len(got), err, b.Used())
	}
	r2 := b.NewReader(strings.NewReader(strings.Repeat("y", 60)))
	if _, err := io.ReadAll(r2); !errors.Is(err, ErrBusy) {
		t.Fatalf("a body beyond the budget: %v, want ErrBusy", err)
	}
	r2.Release()
	r1.Release()
	if b.Used() != 0 {
		t.Fatalf("used after release: %d", b.Used())
	}
	if !b.Reserve(100) || b.Reserve(1) {
		t.Fatal("Reserve does not hold to the budget")
	}
	var none *Budget
	if !none.Reserve(1 << 40) {
		t.Fatal("a nil budget refused")
	}
}
