package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

const imageUsage = `Usage: berth image COMMAND [flags]

Commands:
  pull REF [-u USER --password-stdin]   pull an image (a tag is resolved to its digest)
  list                                  images on the server, with their disk use
  prune                                 remove images nothing uses, and their blobs`

// runImage runs berth image pull|list|prune.
func runImage(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Println(imageUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("image "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var user string
	var stdin bool
	if sub == "pull" {
		fs.StringVar(&user, "u", "", "registry user for this pull (default: the stored login, or anonymous)")
		fs.BoolVar(&stdin, "password-stdin", false, "read the registry password from standard input")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"pull": 1, "list": 0, "prune": 0}
	n, ok := want[sub]
	if !ok {
		return usageError(fmt.Sprintf("unknown image command %q\n\n%s", sub, imageUsage))
	}
	if len(pos) != n {
		return usageError(fmt.Sprintf("image %s takes %d argument(s)\n\n%s", sub, n, imageUsage))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	switch sub {
	case "pull":
		req := controlplane.PullRequest{Ref: pos[0], Username: user}
		if user != "" {
			if !stdin {
				return usageError("image pull -u USER needs --password-stdin")
			}
			b, err := io.ReadAll(io.LimitReader(os.Stdin, 16<<10))
			if err != nil {
				return err
			}
			req.Password = strings.TrimRight(string(b), "\r\n")
		}
		return pullImage(ctx, c, req, cf.output == "json")
	case "list":
		var out struct {
			Value []image.Image `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/images", nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REF\tDIGEST\tSIZE\tLAST USED")
		for _, im := range out.Value {
			refs := strings.Join(im.Refs, ",")
			if refs == "" {
				refs = "<none>"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", refs, shortDigest(im.Digest), pool.FormatBytes(im.Size), im.LastUsed.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	default:
		var out controlplane.PruneResult
		if err := c.call(ctx, http.MethodPost, "/v1/images/prune", nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Printf("freed %s\n", pool.FormatBytes(out.FreedBytes))
		return nil
	}
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// pullImage streams a pull's progress: redrawn per layer on a terminal,
// a line per layer step otherwise.
func pullImage(ctx context.Context, c *apiClient, req controlplane.PullRequest, asJSON bool) error {
	im, err := pullStream(ctx, c, req, newProgressView(os.Stdout, isTerminal(os.Stdout) && !asJSON), asJSON)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(im)
	}
	fmt.Printf("%s: %s (%s)\n", im.Ref, im.Digest, pool.FormatBytes(im.Size))
	return nil
}

// pullStream pulls through the control API, showing progress on view
// (none if quiet), and returns the image.
func pullStream(ctx context.Context, c *apiClient, req controlplane.PullRequest, view *progressView, quiet bool) (*image.Image, error) {
	b, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/images/pull", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+c.token)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{}).Do(hreq) // no timeout: a big pull takes what it takes
	if err != nil {
		return nil, fmt.Errorf("cannot reach the server at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var eb httpapi.Body
		if json.NewDecoder(resp.Body).Decode(&eb) == nil && eb.Error.Message != "" {
			return nil, fmt.Errorf("%s", eb.Error.Message)
		}
		return nil, fmt.Errorf("server answered %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev controlplane.PullEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("bad answer from the server: %w", err)
		}
		switch {
		case ev.Error != "":
			return nil, fmt.Errorf("%s", ev.Error)
		case ev.Image != nil:
			return ev.Image, nil
		case ev.Progress != nil && !quiet:
			view.update(*ev.Progress)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("the server ended the pull without a result")
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressView shows one line per layer.
type progressView struct {
	w      io.Writer
	tty    bool
	order  []string
	state  map[string]image.Progress
	drawn  int
	last   time.Time
	status map[string]string
}

func newProgressView(w io.Writer, tty bool) *progressView {
	return &progressView{w: w, tty: tty, state: map[string]image.Progress{}, status: map[string]string{}}
}

func (v *progressView) update(p image.Progress) {
	if _, ok := v.state[p.Layer]; !ok {
		v.order = append(v.order, p.Layer)
	}
	v.state[p.Layer] = p
	if !v.tty {
		if p.Status != "downloading" && v.status[p.Layer] != p.Status {
			fmt.Fprintf(v.w, "%s: %s %s\n", shortDigest(p.Layer), p.Status, pool.FormatBytes(p.Total))
		}
		v.status[p.Layer] = p.Status
		return
	}
	if p.Status == "downloading" && time.Since(v.last) < 100*time.Millisecond {
		return
	}
	v.last = time.Now()
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA", v.drawn)
	}
	for _, l := range v.order {
		s := v.state[l]
		pct := 100
		if s.Total > 0 {
			pct = int(s.Done * 100 / s.Total)
		}
		fmt.Fprintf(v.w, "\x1b[2K%s: %-11s %3d%% of %s\n", shortDigest(l), s.Status, pct, pool.FormatBytes(s.Total))
	}
	v.drawn = len(v.order)
}
