package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"

	"github.com/berth-dev/berth/controlplane"
)

// runAppHostname runs berth app hostname add|list|delete.
func runAppHostname(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Println(appUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("app hostname "+sub, flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	label := ""
	if sub == "add" {
		fs.StringVar(&label, "label", "", "serve the app's label L (NAME---L) at HOST")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"add": 2, "list": 1, "delete": 2}
	n, ok := want[sub]
	if !ok {
		return usageError(fmt.Sprintf("unknown app hostname command %q\n\n%s", sub, appUsage))
	}
	if len(pos) != n {
		return usageError(fmt.Sprintf("app hostname %s takes %s\n\n%s", sub, map[int]string{1: "an app name", 2: "an app name and a host name"}[n], appUsage))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	base := "/v1/apps/" + url.PathEscape(pos[0]) + "/hostnames"
	switch sub {
	case "add":
		var out controlplane.HostnameView
		if err := c.call(ctx, http.MethodPut, base+"/"+url.PathEscape(pos[1]), controlplane.HostnameRequest{Label: label}, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out)
		}
		fmt.Printf("%s now serves app %s%s: %s%s\n", out.Host, pos[0], labelNote(out.Label), out.URL, hostNote(out))
		return nil
	case "list":
		var out struct {
			Value []controlplane.HostnameView `json:"value"`
		}
		if err := c.call(ctx, http.MethodGet, base, nil, &out); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(out.Value)
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tLABEL\tURL\tCERTIFICATE")
		for _, h := range out.Value {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Host, h.Label, h.URL, h.Certificate)
		}
		return tw.Flush()
	default:
		if err := c.call(ctx, http.MethodDelete, base+"/"+url.PathEscape(pos[1]), nil, nil); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(map[string]any{"deleted": pos[1]})
		}
		fmt.Printf("host name %s removed from app %s\n", pos[1], pos[0])
		return nil
	}
}

func labelNote(label string) string {
	if label == "" {
		return ""
	}
	return " (label " + label + ")"
}

func hostNote(h controlplane.HostnameView) string {
	if h.Certificate == "" {
		return ""
	}
	return " (certificate: " + h.Certificate + ")"
}
