package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParseGroup(t *testing.T) {
	want := map[string]int{"set": 2, "list": 1, "prune": 0}
	for _, tc := range []struct {
		args    []string
		help    bool
		usage   string // a usage error containing this
		sub     string
		pos     string
		fileSet string
	}{
		{args: nil, help: true},
		{args: []string{"-h"}, help: true},
		{args: []string{"nope"}, usage: `unknown secret command "nope"`},
		{args: []string{"set", "a"}, usage: "secret set takes 2 argument(s)"},
		{args: []string{"prune", "x"}, usage: "secret prune takes 0 argument(s)"},
		{args: []string{"list", "--file", "f", "a"}, usage: "flag provided but not defined: -file"},
		{args: []string{"set", "a", "--file", "f", "b"}, sub: "set", pos: "a,b", fileSet: "f"},
		{args: []string{"prune"}, sub: "prune"},
	} {
		args := tc.args
		if !tc.help {
			args = append(args, "--server", "http://127.0.0.1:1", "--token", "t")
		}
		var file string
		g, err := parseGroup("secret", "USAGE", args, want, func(sub string, fs *flag.FlagSet) {
			if sub == "set" {
				fs.StringVar(&file, "file", "", "")
			}
		})
		var ue usageError
		switch {
		case tc.help:
			if g != nil || err != nil {
				t.Errorf("%q: got %+v, %v; want help", tc.args, g, err)
			}
		case tc.usage != "":
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.usage) {
				t.Errorf("%q: got %v; want a usage error with %q", tc.args, err, tc.usage)
			}
		case err != nil || g.sub != tc.sub || strings.Join(g.pos, ",") != tc.pos || file != tc.fileSet:
			t.Errorf("%q: got %+v, %v, file %q", tc.args, g, err, file)
		}
	}
}
