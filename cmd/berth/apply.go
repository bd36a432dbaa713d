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
//	        env: [{name: LOG_LEVEL, value: debug}, {name: DB_PASSWORD, secretRef: db-password}]
//	        resources: {cpu: 0.5, memory: 512Mi, disk: 1Gi}
//	        probes: [{type: readiness, httpGet: {path: /healthz}}]
//	        volumeMounts: [{volumeName: data, mountPath: /data}, {volumeName: secrets, mountPath: /mnt/secrets}]
//	    scale:
//	      minReplicas: 0
//	      maxReplicas: 10
//	      cooldownPeriod: 300
//	      rules: [{name: http, http: {metadata: {concurrentRequests: "10"}}}]
//	    volumes: [{name: data}, {name: secrets, storageType: Secret}]
type manifest struct {
	Name       string `yaml:"name"`
	Properties struct {
		Configuration struct {
			Ingress struct {
				// External is Container Apps' ingress.external: false makes
				// the app internal (absent: unchanged).
				External   *bool  `yaml:"external"`
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
			// Registries are the app's registry logins; a password comes
			// from passwordSecretRef (a secret of the app's) or from an
			// earlier deploy's --registry-password-stdin.
			Registries []struct {
				Server            string `yaml:"server"`
				Username          string `yaml:"username"`
				PasswordSecretRef string `yaml:"passwordSecretRef"`
				Identity          string `yaml:"identity"`
			} `yaml:"registries"`
		} `yaml:"configuration"`
		Template struct {
			RevisionSuffix string `yaml:"revisionSuffix"`
			Containers     []struct {
				Name    string    `yaml:"name"`
				Image   string    `yaml:"image"`
				Command yaml.Node `yaml:"command"`
				Args    []string  `yaml:"args"`
				Dir     string    `yaml:"dir"`
				Env     []struct {
					Name  string `yaml:"name"`
					Value string `yaml:"value"`
					// SecretRef names one of the app's secrets (berth secret set).
					SecretRef string `yaml:"secretRef"`
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
			Egress       string   `yaml:"egress"`
			EgressInject []string `yaml:"egressInject"`
			Volumes      []struct {
				Name string `yaml:"name"`
				// StorageType Secret mounts the app's secrets, one file each.
				StorageType string `yaml:"storageType"`
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
		img := cfg.Source
		cfg.Dir, cfg.Source = "", src.source()
		if img != nil {
			cfg.Source.Image = img.Image
		}
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
		sameImage(&last, &want, m.Properties.Configuration.Ingress.TargetPort == 0)
		last.RevisionSuffix, want.RevisionSuffix = "", ""
		want.Auth = nil // the app's, not the revision's: set below
		// Ingress is the app's too; a change is deployed with a new revision.
		ingress := want.Ingress
		want.Ingress = ""
		changed = !reflect.DeepEqual(last, want) || (ingress != "" && ingress != cmp.Or(cur.Ingress, app.IngressExternal))
	}
	var out controlplane.AppView
	if changed {
		if src != nil {
			if err := c.ensureSource(ctx, src); err != nil {
				return err
			}
		}
		dep, err := deployRevision(ctx, c, m.Name, cfg, cf.output == "json")
		if err != nil {
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
	var cmd string
	var err error
	if ct.Image == "" {
		if cmd, err = commandString(ct.Command, ct.Args); err != nil {
			return app.Config{}, err
		}
	}
	cfg := app.Config{
		Command: cmd, Transport: in.Transport, Port: in.TargetPort, Path: in.Path, CORS: in.CorsPolicy,
		RevisionSuffix: t.RevisionSuffix, CPU: ct.Resources.CPU, Egress: t.Egress, EgressInject: t.EgressInject,
		Max: t.Scale.MaxReplicas, ScaleDownAfterSeconds: t.Scale.CooldownPeriod,
	}
	if t.Scale.MinReplicas != nil {
		cfg.Min = *t.Scale.MinReplicas
	}
	if in.External != nil {
		cfg.Ingress = app.IngressExternal
		if !*in.External {
			cfg.Ingress = app.IngressInternal
		}
	}
	if a := m.Properties.Configuration.Auth; a != nil {
		cfg.Auth = &app.Auth{Mode: a.Mode, Issuer: a.Issuer, Audience: a.Audience, Scopes: a.Scopes,
			AllowedClients: a.AllowedClients, ForwardToken: a.ForwardToken}
		if cfg.Auth.Mode == "" {
			return app.Config{}, fmt.Errorf("configuration.auth.mode is required: none, apikey or oidc")
		}
	}
	if err := m.imageConfig(&cfg); err != nil {
		return cfg, err
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
	if err := m.envVolumesProbe(&cfg); err != nil {
		return cfg, err
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

// envVolumesProbe adds the container's environment (values or secret
// references), its volume mounts (a Secret volume is the secret volume)
// and its readiness probe to cfg.
func (m *manifest) envVolumesProbe(cfg *app.Config) error {
	t := m.Properties.Template
	ct := t.Containers[0]
	for _, e := range ct.Env {
		if e.SecretRef != "" {
			e.Value = "secretref:" + e.SecretRef
		}
		if err := addEnv(cfg, e.Name, e.Value); err != nil {
			return err
		}
	}
	secretVolumes := map[string]bool{}
	for _, v := range t.Volumes {
		secretVolumes[v.Name] = strings.EqualFold(v.StorageType, "Secret")
	}
	for _, v := range ct.VolumeMounts {
		if secretVolumes[v.VolumeName] {
			cfg.SecretVolume = v.MountPath
			continue
		}
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
	return nil
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

// imageConfig fills the settings of a container that names an image: its
// command (a list or a string, split like a shell) replaces the image's
// Entrypoint, its args the image's Cmd.
func (m *manifest) imageConfig(cfg *app.Config) error {
	ct := m.Properties.Template.Containers[0]
	regs := m.Properties.Configuration.Registries
	if ct.Image == "" {
		if len(regs) > 0 {
			return fmt.Errorf("configuration.registries needs a container with an image")
		}
		return nil
	}
	cfg.Source = &app.Source{Image: ct.Image}
	switch ct.Command.Kind {
	case 0:
	case yaml.ScalarNode:
		argv, err := splitArgs(ct.Command.Value)
		if err != nil {
			return fmt.Errorf("command: %w", err)
		}
		cfg.Entrypoint = argv
	case yaml.SequenceNode:
		if err := ct.Command.Decode(&cfg.Entrypoint); err != nil {
			return fmt.Errorf("command: %w", err)
		}
	default:
		return fmt.Errorf("command must be a string or a list")
	}
	cfg.Args = ct.Args
	for _, r := range regs {
		if r.Identity != "" {
			return fmt.Errorf("registries %s: identity: Berth logs in with a username and password", r.Server)
		}
		cfg.Registries = append(cfg.Registries, app.Registry{Server: r.Server, Username: r.Username, PasswordSecretRef: r.PasswordSecretRef})
	}
	return nil
}

// sameImage makes a stored revision comparable with a manifest's template:
// the revision keeps the digest its tag resolved to, and the image's port
// when the manifest names none.
func sameImage(last, want *app.Config, defaultPort bool) {
	if !last.HasImage() || !want.HasImage() || last.Source.ImageTag != want.Source.Image {
		return
	}
	src := *want.Source
	src.Image, src.ImageTag = last.Source.Image, last.Source.ImageTag
	want.Source = &src
	if defaultPort {
		want.Port = last.Port
	}
}
