package gvisor

// The subset of the OCI runtime specification (config.json) that the driver
// writes. It is declared here rather than imported so that the driver needs
// nothing beyond the standard library to describe a bundle.

type ociSpec struct {
	Version  string     `json:"ociVersion"`
	Process  ociProcess `json:"process"`
	Root     ociRoot    `json:"root"`
	Hostname string     `json:"hostname,omitempty"`
	Mounts   []ociMount `json:"mounts"`
	Linux    ociLinux   `json:"linux"`
}

type ociProcess struct {
	User            ociUser          `json:"user"`
	Args            []string         `json:"args"`
	Env             []string         `json:"env"`
	Cwd             string           `json:"cwd"`
	NoNewPrivileges bool             `json:"noNewPrivileges"`
	Capabilities    *ociCapabilities `json:"capabilities"`
	Rlimits         []ociRlimit      `json:"rlimits,omitempty"`
}

type ociUser struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// ociCapabilities with every set empty: the process has no capabilities.
type ociCapabilities struct {
	Bounding    []string `json:"bounding"`
	Effective   []string `json:"effective"`
	Inheritable []string `json:"inheritable"`
	Permitted   []string `json:"permitted"`
	Ambient     []string `json:"ambient"`
}

type ociRlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

type ociRoot struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type ociMount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type,omitempty"`
	Source      string   `json:"source,omitempty"`
	Options     []string `json:"options,omitempty"`
}

type ociLinux struct {
	Namespaces  []ociNamespace `json:"namespaces"`
	UIDMappings []ociIDMapping `json:"uidMappings,omitempty"`
	GIDMappings []ociIDMapping `json:"gidMappings,omitempty"`
	CgroupsPath string         `json:"cgroupsPath,omitempty"`
	Seccomp     *ociSeccomp    `json:"seccomp,omitempty"`
}

type ociNamespace struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

type ociIDMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

type ociSeccomp struct {
	DefaultAction string           `json:"defaultAction"`
	Syscalls      []ociSeccompRule `json:"syscalls,omitempty"`
}

type ociSeccompRule struct {
	Names  []string `json:"names"`
	Action string   `json:"action"`
}
