package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/edge/cors"
	"github.com/berth-dev/berth/pool"
)

// manifest is an app described the way Azure Container Apps describes one
// (the parts Berth uses):
//
//	name: tasks
//	properties:
//	  configuration:
//	    ingress: {targetPort: 8080, transport: http, path: /mcp,
//	              traffic: [{revisionName: tasks--v1, weight: 100, label: stable}],
//	              corsPolicy: {allowedOrigins: [https://app.example.com], maxAge: 3600},
//	              customDomains: [{name: mcp.example.com, bindingType: SniEnabled}]}
//	    auth: {mode: oidc, issuer: https://login.example.com, audience: https://tasks.example.com/mcp,
//	           scopes: [mcp:tools], allowedClients: [agent-1], forwardToken: false}
//	    # or auth: {mode: apikey} (keys: berth app key create); absent: unchanged
//	  template:
//	    revisionSuffix: v1
//	    containers:
//	      - command: ["./tasks", "--db", "/data/tasks.db"]
//	        dir: ./bin            # relative to this file
//	        env: [{name: LOG_LEVEL, value: debug}]
//	        resources: {cpu: 0.5, memory: 512Mi, disk: 1Gi}
//	        probes: [{type: readiness, httpGet: {path: /healthz}}]
//	        volumeMounts: [{volumeName: data, mountPath: /data}]
//	    scale:
//	      minReplicas: 0
//	      maxReplicas: 10
//	      cooldownPeriod: 300
//	      rules: [{name: http, http: {metadata: {concurrentRequests: "10"}}}]
//	    volumes: [{name: data}]
type manifest struct {
	Name       string `yaml:"name"`
	Properties struct {
		Configuration struct {
			Ingress struct {
				TargetPort int    `yaml:"targetPort"`
				Transport  string `yaml:"transport"`
				Path       string `yaml:"path"`
				Traffic    []struct {
					RevisionName   string `yaml:"revisionName"`
					Weight         int    `yaml:"weight"`
					Label          string `yaml:"label"`
					LatestRevision bool   `yaml:"latestRevision"`
				} `yaml:"traffic"`
				// CorsPolicy is Container Apps' ingress.corsPolicy.
				CorsPolicy *cors.Spec `yaml:"corsPolicy"`
				// CustomDomains, when present, are the app's custom domains
				// (hosts the app has and the list lacks are removed).
				CustomDomains *[]struct {
					Name          string `yaml:"name"`
					BindingType   string `yaml:"bindingType"`
					CertificateID string `yaml:"certificateId"`
				} `yaml:"customDomains"`
			} `yaml:"ingress"`
			Auth *struct {
				Mode           string   `yaml:"mode"`
				Issuer         string   `yaml:"issuer"`
				Audience       string   `yaml:"audience"`
				Scopes         []string `yaml:"scopes"`
				AllowedClients []string `yaml:"allowedClients"`
				ForwardToken   bool     `yaml:"forwardToken"`
			} `yaml:"auth"`
		} `yaml:"configuration"`
		Template struct {
			RevisionSuffix string `yaml:"revisionSuffix"`
			Containers     []struct {
				Name    string    `yaml:"name"`
				Command yaml.Node `yaml:"command"`
				Args    []string  `yaml:"args"`
				Dir     string    `yaml:"dir"`
				Env     []struct {
					Name  string `yaml:"name"`
					Value string `yaml:"value"`
				} `yaml:"env"`
				Resources struct {
					CPU    float64 `yaml:"cpu"`
					Memory string  `yaml:"memory"`
					// Disk (or Azure's name, ephemeralStorage) is the
					// replica's disk space.
					Disk             string `yaml:"disk"`
					EphemeralStorage string `yaml:"ephemeralStorage"`
				} `yaml:"resources"`
				Probes []struct {
					Type    string `yaml:"type"`
					HTTPGet *struct {
						Path string `yaml:"path"`
					} `yaml:"httpGet"`
					TCPSocket *struct{} `yaml:"tcpSocket"`
				} `yaml:"probes"`
				VolumeMounts []struct {
					VolumeName string `yaml:"volumeName"`
					MountPath  string `yaml:"mountPath"`
				} `yaml:"volumeMounts"`
			} `yaml:"containers"`
			Scale struct {
				MinReplicas    *int `yaml:"minReplicas"`
				MaxReplicas    int  `yaml:"maxReplicas"`
				CooldownPeriod int  `yaml:"cooldownPeriod"`
				Rules          []struct {
					Name string `yaml:"name"`
					HTTP struct {
						Metadata struct {
							ConcurrentRequests string `yaml:"concurrentRequests"`
						} `yaml:"metadata"`
					} `yaml:"http"`
				} `yaml:"rules"`
			} `yaml:"scale"`
			Egress  string `yaml:"egress"`
			Volumes []struct {
				Name string `yaml:"name"`
			} `yaml:"volumes"` // made on first use
		} `yaml:"template"`
	} `yaml:"properties"`
}

func runApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	file := fs.String("f", "", "the app manifest (YAML)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return usageError("apply needs -f FILE.yaml")
	}
	raw, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	if isPoolManifest(raw) {
		return applyPool(ctx, cf, raw, *file)
	}
	var m manifest
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	cfg, err := m.config(filepath.Dir(*file))
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	// The container's dir is packed here; the revision names the archive
	// by digest (an unchanged tree packs to the same one).
	var src *packed
	if cfg.Dir != "" {
		if src, err = packDir(ctx, cfg.Dir); err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		defer src.remove()
		cfg.Dir, cfg.Source = "", src.source()
	}
	// A new revision only if the template differs from the latest one.
	var cur controlplane.AppView
	exists := c.call(ctx, http.MethodGet, "/v1/apps/"+m.Name, nil, &cur) == nil
	changed := true
	if exists && len(cur.Revisions) > 0 {
		want := cfg
		if err := want.Normalize(); err != nil {
			return err
		}
		last := cur.Revisions[len(cur.Revisions)-1].Config
		last.RevisionSuffix, want.RevisionSuffix = "", ""
		want.Auth = nil // the app's, not the revision's: set below
		changed = !reflect.DeepEqual(last, want)
	}
	var out controlplane.AppView
	if changed {
		if src != nil {
			if err := c.ensureSource(ctx, src); err != nil {
				return err
			}
		}
		var dep struct {
			Revision app.Revision         `json:"revision"`
			App      controlplane.AppView `json:"app"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/apps/"+m.Name+"/revisions", cfg, &dep); err != nil {
			return err
		}
		out = dep.App
		if cf.output != "json" {
			fmt.Printf("revision %s created\n", dep.Revision.Name)
		}
	} else {
		out = cur
		if cf.output != "json" {
			fmt.Println("template unchanged: no new revision")
		}
		if cfg.Auth != nil {
			if err := c.call(ctx, http.MethodPut, "/v1/apps/"+m.Name+"/auth", cfg.Auth, &out); err != nil {
				return err
			}
		}
	}
	if tr := m.traffic(); tr.Traffic != nil || tr.Labels != nil {
		if err := c.call(ctx, http.MethodPut, "/v1/apps/"+m.Name+"/traffic", tr, &out); err != nil {
			return err
		}
	}
	if err := m.applyDomains(ctx, c, &out); err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	printApp(out)
	return nil
}

// applyDomains makes the app's custom domains those of the manifest, if it
// lists them, and refreshes out.
func (m *manifest) applyDomains(ctx context.Context, c *apiClient, out *controlplane.AppView) error {
	list := m.Properties.Configuration.Ingress.CustomDomains
	if list == nil {
		return nil
	}
	want := map[string]bool{}
	for _, d := range *list {
		switch d.BindingType {
		case "", "SniEnabled", "Auto":
		default:
			return fmt.Errorf("customDomains %s: bindingType %q: Berth serves every custom domain with its own certificate by SNI (SniEnabled)", d.Name, d.BindingType)
		}
		want[d.Name] = true
	}
	have := map[string]bool{}
	for _, h := range out.Hostnames {
		have[h.Host] = true
	}
	base := "/v1/apps/" + url.PathEscape(m.Name) + "/hostnames/"
	// Added first: if one cannot be (another app has it), the app keeps
	// the hosts it had.
	for h := range want {
		if !have[h] {
			if err := c.call(ctx, http.MethodPut, base+url.PathEscape(h), controlplane.HostnameRequest{}, nil); err != nil {
				return fmt.Errorf("customDomains %s: %w", h, err)
			}
		}
	}
	for h := range have {
		if !want[h] {
			if err := c.call(ctx, http.MethodDelete, base+url.PathEscape(h), nil, nil); err != nil {
				return err
			}
		}
	}
	return c.call(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(m.Name), nil, out)
}

func (m *manifest) config(base string) (app.Config, error) {
	t := m.Properties.Template
	in := m.Properties.Configuration.Ingress
	if m.Name == "" {
		return app.Config{}, fmt.Errorf("name is required")
	}
	if len(t.Containers) != 1 {
		return app.Config{}, fmt.Errorf("template.containers must have exactly one container, not %d", len(t.Containers))
	}
	ct := t.Containers[0]
	cmd, err := commandString(ct.Command, ct.Args)
	if err != nil {
		return app.Config{}, err
	}
	cfg := app.Config{
		Command: cmd, Transport: in.Transport, Port: in.TargetPort, Path: in.Path, CORS: in.CorsPolicy,
		RevisionSuffix: t.RevisionSuffix, CPU: ct.Resources.CPU, Egress: t.Egress,
		Max: t.Scale.MaxReplicas, ScaleDownAfterSeconds: t.Scale.CooldownPeriod,
	}
	if t.Scale.MinReplicas != nil {
		cfg.Min = *t.Scale.MinReplicas
	}
	if a := m.Properties.Configuration.Auth; a != nil {
		cfg.Auth = &app.Auth{Mode: a.Mode, Issuer: a.Issuer, Audience: a.Audience, Scopes: a.Scopes,
			AllowedClients: a.AllowedClients, ForwardToken: a.ForwardToken}
		if cfg.Auth.Mode == "" {
			return app.Config{}, fmt.Errorf("configuration.auth.mode is required: none, apikey or oidc")
		}
	}
	if ct.Dir != "" {
		dir := ct.Dir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(base, dir)
		}
		// The local directory to upload (runApply packs it).
		if cfg.Dir, err = filepath.Abs(dir); err != nil {
			return cfg, err
		}
	}
	if ct.Resources.Memory != "" {
		if cfg.MemoryBytes, err = pool.ParseBytes(ct.Resources.Memory); err != nil {
			return cfg, err
		}
	}
	if d := cmp.Or(ct.Resources.Disk, ct.Resources.EphemeralStorage); d != "" {
		if cfg.DiskBytes, err = pool.ParseBytes(d); err != nil {
			return cfg, fmt.Errorf("resources.disk: %w", err)
		}
	}
	for _, e := range ct.Env {
		if cfg.Env == nil {
			cfg.Env = map[string]string{}
		}
		cfg.Env[e.Name] = e.Value
	}
	for _, v := range ct.VolumeMounts {
		cfg.Volumes = append(cfg.Volumes, app.Volume{Name: v.VolumeName, Path: v.MountPath})
	}
	for _, p := range ct.Probes {
		if p.Type != "" && !strings.EqualFold(p.Type, "readiness") {
			continue
		}
		switch {
		case p.HTTPGet != nil:
			cfg.Probe = app.Probe{Type: "http", Path: p.HTTPGet.Path}
		case p.TCPSocket != nil:
			cfg.Probe = app.Probe{Type: "tcp"}
		}
	}
	for _, r := range t.Scale.Rules {
		if c := r.HTTP.Metadata.ConcurrentRequests; c != "" {
			if cfg.Concurrency, err = strconv.Atoi(c); err != nil {
				return cfg, fmt.Errorf("concurrentRequests: %w", err)
			}
		}
	}
	return cfg, nil
}

// commandString joins a command given as a list (quoted for sh) or takes
// it as one string.
func commandString(n yaml.Node, args []string) (string, error) {
	var parts []string
	switch n.Kind {
	case 0:
	case yaml.ScalarNode:
		parts = append(parts, n.Value)
	case yaml.SequenceNode:
		var list []string
		if err := n.Decode(&list); err != nil {
			return "", err
		}
		for _, a := range list {
			parts = append(parts, shellQuote(a))
		}
	default:
		return "", fmt.Errorf("command must be a string or a list")
	}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("the container needs a command")
	}
	return strings.Join(parts, " "), nil
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == '=' || r == ':' || r == '$' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (m *manifest) traffic() controlplane.TrafficRequest {
	var tr controlplane.TrafficRequest
	for _, t := range m.Properties.Configuration.Ingress.Traffic {
		if t.RevisionName == "" {
			continue // latestRevision: the default
		}
		if t.Weight > 0 || len(m.Properties.Configuration.Ingress.Traffic) > 1 {
			tr.Traffic = append(tr.Traffic, app.TrafficTarget{Revision: t.RevisionName, Percent: t.Weight})
		}
		if t.Label != "" {
			if tr.Labels == nil {
				tr.Labels = map[string]string{}
			}
			tr.Labels[t.Label] = t.RevisionName
		}
	}
	return tr
}
