package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-dev/berth/controlplane"
	"github.com/berth-dev/berth/pool"
)

// sessionPoolType is the manifest type of a session pool, as Azure names
// the resource.
const sessionPoolType = "Microsoft.App/sessionPools"

// poolManifest is a session pool described the way Azure describes one
// (the parts Berth uses), plus Berth's own image for code-interpreter
// pools and its MCP endpoint:
//
//	type: Microsoft.App/sessionPools
//	name: python
//	properties:
//	  containerType: PythonLTS        # or Shell, CustomContainer
//	  image: builtin:python           # code-interpreter pools: the image to run on
//	  runtime: bwrap                  # or gvisor
//	  mcp: true
//	  scaleConfiguration: {maxConcurrentSessions: 100, readySessionInstances: 2}
//	  dynamicPoolConfiguration: {cooldownPeriodInSeconds: 300}
//	  sessionNetworkConfiguration: {status: EgressDisabled}
//	  customContainerTemplate:        # CustomContainer pools
//	    containers:
//	      - image: registry.example:5000/app:1
//	        command: [/app/server]
//	        args: [--verbose]
//	        env: [{name: GREETING, value: hello}]
//	        resources: {cpu: 0.5, memory: 512Mi}
//	    ingress: {targetPort: 8080}
type poolManifest struct {
	Type       string `yaml:"type"`
	Name       string `yaml:"name"`
	Location   string `yaml:"location"`
	Properties struct {
		ContainerType      string `yaml:"containerType"`
		PoolManagementType string `yaml:"poolManagementType"`
		Image              string `yaml:"image"`
		Runtime            string `yaml:"runtime"`
		MCP                *bool  `yaml:"mcp"`
		ScaleConfiguration struct {
			MaxConcurrentSessions int  `yaml:"maxConcurrentSessions"`
			ReadySessionInstances *int `yaml:"readySessionInstances"`
		} `yaml:"scaleConfiguration"`
		DynamicPoolConfiguration struct {
			CooldownPeriodInSeconds int `yaml:"cooldownPeriodInSeconds"`
		} `yaml:"dynamicPoolConfiguration"`
		SessionNetworkConfiguration struct {
			Status string `yaml:"status"`
		} `yaml:"sessionNetworkConfiguration"`
		CustomContainerTemplate *struct {
			Containers []struct {
				Name    string   `yaml:"name"`
				Image   string   `yaml:"image"`
				Command []string `yaml:"command"`
				Args    []string `yaml:"args"`
				Env     []struct {
					Name  string `yaml:"name"`
					Value string `yaml:"value"`
				} `yaml:"env"`
				Resources struct {
					CPU    float64 `yaml:"cpu"`
					Memory string  `yaml:"memory"`
				} `yaml:"resources"`
			} `yaml:"containers"`
			Ingress struct {
				TargetPort int `yaml:"targetPort"`
			} `yaml:"ingress"`
		} `yaml:"customContainerTemplate"`
	} `yaml:"properties"`
}

// isPoolManifest tells a session pool's manifest from an app's.
func isPoolManifest(raw []byte) bool {
	var head struct {
		Type string `yaml:"type"`
	}
	return yaml.Unmarshal(raw, &head) == nil && strings.EqualFold(head.Type, sessionPoolType)
}

// config is the pool the manifest describes.
func (m *poolManifest) config() (pool.Config, error) {
	p := m.Properties
	cfg := pool.Config{Name: m.Name, Image: p.Image, Runtime: p.Runtime, MCP: p.MCP != nil && *p.MCP,
		Max: p.ScaleConfiguration.MaxConcurrentSessions, CooldownSeconds: p.DynamicPoolConfiguration.CooldownPeriodInSeconds}
	if r := p.ScaleConfiguration.ReadySessionInstances; r != nil {
		cfg.Ready = *r
	} else {
		cfg.Ready = pool.DefaultReady
	}
	switch strings.ToLower(p.ContainerType) {
	case "", "shell":
		cfg.Type = pool.TypeShell
	case "pythonlts", "python":
		cfg.Type = pool.TypePython
	case "customcontainer", "custom":
		cfg.Type = pool.TypeCustom
	default:
		return cfg, fmt.Errorf("containerType %q: Berth runs Shell, PythonLTS and CustomContainer pools", p.ContainerType)
	}
	switch strings.ToLower(p.SessionNetworkConfiguration.Status) {
	case "", "egressdisabled":
		cfg.Egress = "disabled"
	case "egressenabled":
		cfg.Egress = "enabled"
	default:
		return cfg, fmt.Errorf("sessionNetworkConfiguration.status %q: EgressEnabled or EgressDisabled", p.SessionNetworkConfiguration.Status)
	}
	t := p.CustomContainerTemplate
	if cfg.Type != pool.TypeCustom {
		if t != nil {
			return cfg, fmt.Errorf("customContainerTemplate is for containerType CustomContainer")
		}
		return cfg, nil
	}
	if t == nil || len(t.Containers) != 1 {
		return cfg, fmt.Errorf("a CustomContainer pool needs customContainerTemplate.containers with exactly one container")
	}
	ct := t.Containers[0]
	cfg.Image, cfg.CPU = ct.Image, ct.Resources.CPU
	if ct.Resources.Memory != "" {
		mem, err := pool.ParseBytes(ct.Resources.Memory)
		if err != nil {
			return cfg, fmt.Errorf("resources.memory: %w", err)
		}
		cfg.MemoryBytes = mem
	}
	cfg.Container = &pool.Container{TargetPort: t.Ingress.TargetPort, Command: ct.Command, Args: ct.Args}
	for _, e := range ct.Env {
		if cfg.Container.Env == nil {
			cfg.Container.Env = map[string]string{}
		}
		cfg.Container.Env[e.Name] = e.Value
	}
	return cfg, nil
}

// applyPool creates the pool of a manifest, or brings an existing one to
// it (its image, container and scale; a changed image replaces the warm
// sandboxes).
func applyPool(ctx context.Context, cf clientFlags, raw []byte, file string) error {
	var m poolManifest
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	cfg, err := m.config()
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var cur controlplane.PoolView
	path := "/v1/pools/" + url.PathEscape(cfg.Name)
	exists := c.call(ctx, http.MethodGet, path, nil, &cur) == nil
	if cfg.ImageDigest, err = pullFirst(ctx, c, cfg.Image); err != nil {
		return err
	}
	var out controlplane.PoolView
	if !exists {
		var created struct {
			controlplane.PoolView
			APIKey string `json:"apiKey"`
		}
		if err := c.call(ctx, http.MethodPost, "/v1/pools", cfg, &created); err != nil {
			return err
		}
		out = created.PoolView
		if cf.output != "json" {
			fmt.Printf("pool %s created (berth pool credentials %s prints its key)\n", cfg.Name, cfg.Name)
		}
	} else {
		if cur.Type != cfg.Type || cfg.Runtime != "" && cur.Runtime != cfg.Runtime {
			return fmt.Errorf("%s: pool %s is a %s pool on %s; its type and runtime cannot change (delete it first)", file, cfg.Name, cur.Type, cur.Runtime)
		}
		patch := controlplane.Patch{Ready: &cfg.Ready, MCP: &cfg.MCP, Egress: &cfg.Egress, Container: cfg.Container}
		if cfg.Max > 0 {
			patch.Max = &cfg.Max
		}
		if cfg.CooldownSeconds > 0 {
			patch.CooldownSeconds = &cfg.CooldownSeconds
		}
		if cfg.MemoryBytes > 0 {
			patch.MemoryBytes = &cfg.MemoryBytes
		}
		if cfg.CPU > 0 {
			patch.CPU = &cfg.CPU
		}
		if cfg.Image != cur.Image || cfg.ImageDigest != "" && cfg.ImageDigest != cur.ImageDigest {
			patch.Image, patch.ImageDigest = &cfg.Image, &cfg.ImageDigest
		}
		if err := c.call(ctx, http.MethodPatch, path, patch, &out); err != nil {
			return err
		}
		if cf.output != "json" {
			fmt.Printf("pool %s updated\n", cfg.Name)
		}
	}
	if cf.output == "json" {
		return printJSON(out)
	}
	printPool(out)
	return nil
}
