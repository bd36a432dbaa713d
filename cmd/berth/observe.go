package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/internal/events"
)

// runEvents is "berth events": the server's recent events.
func runEvents(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	app := fs.String("app", "", "only this app's events")
	pool := fs.String("pool", "", "only this pool's events")
	limit := fs.Int("limit", 50, "the newest N events")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("events takes no arguments: berth events [--app A] [--pool P] [--limit N]")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	if *app != "" {
		q.Set("app", *app)
	}
	if *pool != "" {
		q.Set("pool", *pool)
	}
	var out struct {
		Value []events.Event `json:"value"`
	}
	if err := c.call(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tAPP/POOL\tMESSAGE")
	for _, e := range out.Value {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.DateTime), e.Kind, e.App+e.Pool, e.Message)
	}
	return tw.Flush()
}

// runAppMetrics is "berth app metrics [NAME]".
func runAppMetrics(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("app metrics", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError("app metrics takes at most one app name")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path := "/v1/metrics/apps"
	if len(pos) == 1 {
		path += "?app=" + url.QueryEscape(pos[0])
	}
	var out struct {
		Value []controlplane.AppMetrics `json:"value"`
	}
	if err := c.call(ctx, http.MethodGet, path, nil, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	for _, m := range out.Value {
		fmt.Fprintf(tw, "%s\trequests %d\terrors %d\tlast %ds: %d requests, %d errors\n", m.App, m.Requests, m.Errors, m.LastHour.WindowSeconds, m.LastHour.Requests, m.LastHour.Errors)
		for _, t := range m.Tools {
			fmt.Fprintf(tw, "  tool %s\tcalls %d\terrors %d\t\n", t.Tool, t.Calls, t.Errors)
		}
		for _, x := range m.Methods {
			fmt.Fprintf(tw, "  %s\t%d\tp50 %.1f ms\tp99 %.1f ms\n", x.Method, x.Count, x.P50Ms, x.P99Ms)
		}
	}
	return tw.Flush()
}

// runPoolSessions is "berth pool sessions NAME" and "berth pool
// end-session NAME IDENTIFIER".
func runPoolSessions(ctx context.Context, sub string, args []string) error {
	fs := flag.NewFlagSet("pool "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"sessions": 1, "end-session": 2}[sub]
	if len(pos) != want {
		return usageError("usage: berth pool sessions NAME | berth pool end-session NAME IDENTIFIER")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	base := "/v1/pools/" + url.PathEscape(pos[0]) + "/sessions"
	if sub == "end-session" {
		if err := c.call(ctx, http.MethodDelete, base+"/"+url.PathEscape(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Printf("session %s ended\n", pos[1])
		return nil
	}
	var out struct {
		Value []controlplane.SessionView `json:"value"`
	}
	if err := c.call(ctx, http.MethodGet, base, nil, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTIFIER\tAGE\tIDLE\tRUNNING\tCPU\tMEMORY\tDISK\tPROCESSES\tOOM KILLS")
	for _, s := range out.Value {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2fs\t%d MiB\t%d MiB\t%d\t%d\n", s.Identifier, time.Since(s.CreatedAt).Round(time.Second),
			time.Since(s.LastActiveAt).Round(time.Second), s.Running, s.CPUSeconds, s.MemoryBytes>>20, s.DiskBytes>>20, s.Processes, s.OOMKills)
	}
	return tw.Flush()
}
