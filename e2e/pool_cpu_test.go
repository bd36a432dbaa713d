package e2e

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/controlplane"
)

// TestPoolSessionCPU: a session that spun the CPU for two seconds shows
// more CPU time, and a higher recent rate, than one that ran "true", in
// "berth pool sessions -o json" and on the dashboard's pool page.
func TestPoolSessionCPU(t *testing.T) {
	b := startBerth(t, "")
	key := b.createPool("cpu", "--ready", "0", "--max", "4")
	busy := `end=$(( $(date +%s) + 3 )); while [ "$(date +%s)" -lt "$end" ]; do :; done; echo spun`
	// The idle session first: its rate is over the busy one's 3 seconds,
	// not over its own start alone.
	b.execute("cpu", key, "idle-1", "true")
	if r := b.execute("cpu", key, "busy-1", busy); !strings.Contains(r.Stdout, "spun") {
		t.Fatalf("busy session: %+v", r)
	}
	var out struct {
		Value []controlplane.SessionView `json:"value"`
	}
	b.cliJSON(&out, "pool", "sessions", "cpu")
	got := map[string]controlplane.SessionView{}
	for _, s := range out.Value {
		got[s.Identifier] = s
	}
	bs, is := got["busy-1"], got["idle-1"]
	t.Logf("busy: %.3f s CPU, %.3f cores; idle: %.3f s CPU, %.3f cores", bs.CPUSeconds, bs.CPURate, is.CPUSeconds, is.CPURate)
	if bs.CPUSeconds < is.CPUSeconds+0.5 || bs.CPURate <= is.CPURate {
		t.Fatalf("the busy session does not show more CPU than the idle one: %+v / %+v", bs, is)
	}

	// The pool page shows the same.
	token, _ := os.ReadFile(filepath.Join(b.dataDir, "admin.token"))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.PostForm(b.info.AdminURL+"/ui/login", url.Values{"token": {strings.TrimSpace(string(token))}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(res.Cookies()) != 1 {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, b.info.AdminURL+"/ui/pools/cpu", nil)
	req.AddCookie(res.Cookies()[0])
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page := new(strings.Builder)
	_, _ = io.Copy(page, res.Body)
	cpu := map[string]float64{}
	for _, m := range regexp.MustCompile(`(?s)<code>([a-z]+-1)</code>.*?data-cpu="([0-9.e+-]+)"`).FindAllStringSubmatch(page.String(), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		cpu[m[1]] = v
	}
	if len(cpu) != 2 || cpu["busy-1"] < cpu["idle-1"]+0.5 {
		t.Fatalf("the pool page's CPU column: %v", cpu)
	}
}
