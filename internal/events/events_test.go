package events

import "testing"

func TestRingKeepsTheNewest(t *testing.T) {
	tests := []struct {
		name   string
		size   int
		add    int
		filter Filter
		want   []uint64
	}{
		{"not full", 4, 3, Filter{}, []uint64{1, 2, 3}},
		{"wrapped", 4, 6, Filter{}, []uint64{3, 4, 5, 6}},
		{"limit", 4, 6, Filter{Limit: 2}, []uint64{5, 6}},
		{"after", 4, 6, Filter{After: 4}, []uint64{5, 6}},
		{"by app", 8, 6, Filter{App: "even"}, []uint64{2, 4, 6}},
		{"empty", 4, 0, Filter{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.size)
			for i := 1; i <= tt.add; i++ {
				app := "odd"
				if i%2 == 0 {
					app = "even"
				}
				r.Add(Event{Kind: "deploy", App: app})
			}
			got := r.List(tt.filter)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want seqs %v", len(got), got, tt.want)
			}
			for i, e := range got {
				if e.Seq != tt.want[i] || e.Time.IsZero() {
					t.Fatalf("event %d: %+v, want seq %d", i, e, tt.want[i])
				}
			}
		})
	}
	var nilRing *Ring
	nilRing.Add(Event{})
	if got := nilRing.List(Filter{}); len(got) != 0 {
		t.Fatal("a nil ring listed events")
	}
}
