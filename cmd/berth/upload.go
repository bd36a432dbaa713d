package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/source"
)

// packed is a directory packed into a temporary archive.
type packed struct {
	dir    string
	path   string
	digest string
	size   int64
}

// source is the revision source that names the archive.
func (p *packed) source() *app.Source { return &app.Source{Archive: p.digest} }

func (p *packed) remove() { _ = os.Remove(p.path) }

// packDir packs a local directory (see archive.Pack) into a temporary
// file, telling stderr what it skips.
func packDir(ctx context.Context, dir string) (*packed, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return nil, usageError(fmt.Sprintf("--dir %s is not a directory", dir))
	}
	f, err := os.CreateTemp("", "berth-source-*.tar.gz")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &packed{dir: dir, path: f.Name()}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = archive.Pack(ctx, cw, abs, archive.PackOptions{Skipped: func(rel, why string) {
		fmt.Fprintf(os.Stderr, "skipping %s: %s\n", filepath.Join(dir, rel), why)
	}})
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		p.remove()
		return nil, fmt.Errorf("pack --dir %s: %w", dir, err)
	}
	p.digest, p.size = "sha256:"+hex.EncodeToString(h.Sum(nil)), cw.n
	return p, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// uploadDir packs dir and uploads it unless the server has it.
func uploadDir(ctx context.Context, c *apiClient, dir string) (*app.Source, error) {
	p, err := packDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer p.remove()
	if err := c.ensureSource(ctx, p); err != nil {
		return nil, err
	}
	return p.source(), nil
}

// ensureSource uploads a packed directory unless the server has it.
func (a *apiClient) ensureSource(ctx context.Context, p *packed) error {
	short := p.digest[:len("sha256:")+12]
	has, err := a.hasSource(ctx, p.digest)
	if err != nil {
		return err
	}
	if has {
		fmt.Fprintf(os.Stderr, "source %s (%s, %s) is on the server already: not uploaded again\n", short, p.dir, human(p.size))
		return nil
	}
	f, err := os.Open(p.path)
	if err != nil {
		return err
	}
	defer f.Close()
	prog := newProgress(os.Stderr, fmt.Sprintf("uploading %s (%s)", p.dir, short), p.size)
	body := &progressReader{r: f, p: prog}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/v1/sources?digest="+url.QueryEscape(p.digest), body)
	if err != nil {
		return err
	}
	req.ContentLength = p.size
	req.GetBody = nil
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/gzip")
	// No overall timeout: a large upload on a slow link takes what it takes.
	resp, err := (&http.Client{}).Do(req)
	prog.done()
	if err != nil {
		return fmt.Errorf("upload --dir %s to %s: %w", p.dir, a.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("upload --dir %s: %w", p.dir, apiError(resp))
	}
	var info source.Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return err
	}
	if info.Digest != p.digest {
		return fmt.Errorf("upload --dir %s: the server stored %s, not %s", p.dir, info.Digest, p.digest)
	}
	fmt.Fprintf(os.Stderr, "uploaded %s (%s, %s)\n", short, p.dir, human(p.size))
	return nil
}

func (a *apiClient) hasSource(ctx context.Context, digest string) (bool, error) {
	req, err := a.request(ctx, http.MethodGet, "/v1/sources/"+digest, nil)
	if err != nil {
		return false, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("cannot reach the server at %s: %w", a.base, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return true, nil
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	}
	return false, apiError(resp)
}

// progress shows how much of an upload was sent: a bar redrawn in place
// on a terminal, a line at the start otherwise.
type progress struct {
	w     io.Writer
	label string
	total int64
	tty   bool

	mu   sync.Mutex
	sent int64
	last time.Time
}

func newProgress(f *os.File, label string, total int64) *progress {
	p := &progress{w: f, label: label, total: total, tty: isTerminal(f)}
	if !p.tty {
		fmt.Fprintf(f, "%s: %s\n", label, human(total))
	}
	return p
}

func (p *progress) add(n int) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent += int64(n)
	if time.Since(p.last) < 100*time.Millisecond && p.sent < p.total {
		return
	}
	p.last = time.Now()
	p.draw()
}

func (p *progress) draw() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = min(1, float64(p.sent)/float64(p.total))
	}
	bar := strings.Repeat("=", int(frac*width)) + strings.Repeat(" ", width-int(frac*width))
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %s/%s", p.label, bar, frac*100, human(p.sent), human(p.total))
}

func (p *progress) done() {
	if p.tty {
		p.mu.Lock()
		p.draw()
		p.mu.Unlock()
		fmt.Fprintln(p.w)
	}
}

type progressReader struct {
	r io.Reader
	p *progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.add(n)
	return n, err
}

// human formats a byte count for people (1.5 MiB).
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
