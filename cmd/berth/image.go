package main

import (
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
)

const imageUsage = `Usage: berth image COMMAND [flags]

Commands:
  pull REF [-u USER --password-stdin]   pull an image (a tag is resolved to its digest)
  list                                  images on the server, with their disk use
  prune                                 remove images nothing uses, and their blobs`

// runImage runs berth image pull|list|prune.
func runImage(ctx context.Context, args []string) error {
	var user string
	var stdin bool
	g, err := parseGroup("image", imageUsage, args, map[string]int{"pull": 1, "list": 0, "prune": 0}, func(sub string, fs *flag.FlagSet) {
		if sub == "pull" {
			fs.StringVar(&user, "u", "", "registry user for this pull (default: the stored login, or anonymous)")
			fs.BoolVar(&stdin, "password-stdin", false, "read the registry password from standard input")
		}
	})
	if g == nil || err != nil {
		return err
	}
	c, pos := g.c, g.pos
	switch g.sub {
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
		return pullImage(ctx, c, req, g.json)
	case "list":
		var out struct {
			Value []image.Image `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, "/v1/images", nil, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REF\tDIGEST\tSIZE\tLAST USED")
		for _, im := range out.Value {
			refs := strings.Join(im.Refs, ",")
			if refs == "" {
				refs = "<none>"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", refs, shortDigest(im.Digest), human(im.Size), im.LastUsed.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	default:
		var out controlplane.PruneResult
		if err := c.call(ctx, http.MethodPost, "/v1/images/prune", nil, &out); err != nil {
			return err
		}
		if g.json {
			return printJSON(out)
		}
		fmt.Printf("freed %s\n", human(out.FreedBytes))
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
	switch {
	case err != nil:
		return err
	case asJSON:
		return printJSON(im)
	}
	fmt.Printf("%s: %s (%s)\n", im.Ref, im.Digest, human(im.Size))
	return nil
}

// pullStream pulls through the control API, showing progress on view
// (none if quiet), and returns the image.
func pullStream(ctx context.Context, c *apiClient, req controlplane.PullRequest, view *progressView, quiet bool) (*image.Image, error) {
	var im *image.Image
	err := c.stream(ctx, http.MethodPost, "/v1/images/pull", req, func(line []byte) error {
		var ev controlplane.PullEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("bad answer from the server: %w", err)
		}
		switch {
		case ev.Error != "":
			return fmt.Errorf("%s", ev.Error)
		case ev.Image != nil:
			im = ev.Image
			return errStop
		case ev.Progress != nil && !quiet:
			view.update(*ev.Progress)
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case im == nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the server ended the pull without a result")
	}
	return im, nil
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
			fmt.Fprintf(v.w, "%s: %s %s\n", shortDigest(p.Layer), p.Status, human(p.Total))
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
		fmt.Fprintf(v.w, "\x1b[2K%s: %-11s %3d%% of %s\n", shortDigest(l), s.Status, pct, human(s.Total))
	}
	v.drawn = len(v.order)
}
