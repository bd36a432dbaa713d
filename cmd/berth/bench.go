package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/bwrap"
	"github.com/berth-dev/berth/sandbox/gvisor"
)

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	rts := fs.String("runtime", "bwrap,gvisor", "runtimes to measure, comma-separated")
	n := fs.Int("n", 200, "iterations of each latency measurement (cold starts use n/10)")
	idle := fs.String("idle", "bwrap=1000,gvisor=50", "idle sessions to hold per runtime for the memory measurement")
	runsc := fs.String("runsc", "", "runsc binary (default: as berth up finds it)")
	output := fs.String("o", "text", "output format: text or json")
	layout := fs.String("image-layout", "", "OCI image layout (e.g. scripts/images.sh's shell image): also measure warm acquire + first echo on a pool on it")
	if err := fs.Parse(args); err != nil {
		return flagError(err)
	}
	idleN := map[string]int{}
	for _, kv := range strings.Split(*idle, ",") {
		k, v, ok := strings.Cut(kv, "=")
		c, err := strconv.Atoi(v)
		if !ok || err != nil || c < 1 {
			return usageError("--idle takes RUNTIME=N pairs, like bwrap=1000,gvisor=50")
		}
		idleN[k] = c
	}
	if *runsc == "" {
		*runsc = findRunsc()
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	instance := fmt.Sprintf("bench%d", os.Getpid())
	var measured []bench.Runtime
	for _, name := range strings.Split(*rts, ",") {
		var rt sandbox.Runtime
		var bare func(context.Context) error
		switch name {
		case "bwrap":
			o := bwrap.Options{Logger: quiet}
			o.Instance = instance
			r, err := bwrap.New(o)
			if err != nil {
				return err
			}
			rt, bare = r, bench.BareBwrap
		case "gvisor":
			o := gvisor.Options{Runsc: *runsc, Logger: quiet}
			o.Instance = instance
			r, err := gvisor.New(o)
			if err != nil {
				return err
			}
			rt, bare = r, bench.BareRunsc(*runsc)
		default:
			return usageError(fmt.Sprintf("unknown runtime %q (bwrap or gvisor)", name))
		}
		defer rt.Cleanup(context.Background())
		measured = append(measured, bench.Runtime{Name: name, Runtime: rt, Bare: bare})
	}
	bo := bench.Options{Runtimes: measured, Iterations: *n, IdleSessions: idleN, Progress: os.Stderr}
	if *layout != "" {
		dir, err := os.MkdirTemp("", "berth-bench-images-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		images, err := image.Open(dir, image.Options{IDShift: sandbox.ImageIDShift, Logger: quiet})
		if err != nil {
			return err
		}
		if bo.Image, err = images.Load(ctx, *layout, "berth.local/bench:1"); err != nil {
			return err
		}
		bo.Images = images
	}
	results, err := bench.Run(ctx, bo)
	if err != nil {
		return err
	}
	if *output == "json" {
		return printJSON(results)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nMEASURE\tRUNTIME\tP50 ms\tP99 ms\tN")
	for _, r := range results {
		for _, row := range []struct {
			name string
			l    bench.Latency
		}{
			{"bare tool start", r.BareStart}, {"cold sandbox start", r.ColdStart},
			{"warm acquire + first echo", r.WarmAcquireEcho}, {"warm acquire + first echo, image", deref(r.WarmAcquireEchoImage)},
			{"echo in session", r.Echo}, {"python print(x) in session", r.PythonPrint},
		} {
			if row.l.N == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%d\n", row.name, r.Runtime, row.l.P50, row.l.P99, row.l.N)
		}
	}
	fmt.Fprintln(tw, "\nRUNTIME\tCOLD/BARE\tIDLE SESSIONS\tCGROUP MiB/SESSION\tSYSTEM MiB/SESSION\tFIT IN 24 GiB")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.2fx\t%d (%d failed, %.1fs)\t%.1f\t%.1f\t%d\n", r.Runtime, r.ColdOverBare, r.IdleSessions,
			r.IdleStartFailures, r.IdleStartDuration, float64(r.IdleCgroupBytes)/(1<<20), float64(r.IdleSystemBytes)/(1<<20), r.SessionsIn24GiB)
	}
	return tw.Flush()
}

func deref(l *bench.Latency) bench.Latency {
	if l == nil {
		return bench.Latency{}
	}
	return *l
}
