// Package agent is the small program that runs inside every Berth sandbox and
// the host-side client that talks to it.
//
// The agent is the berth binary itself (the hidden "berth agent" subcommand),
// started as the sandbox's first process. It serves HTTP/1.1 on a Unix socket
// that the runtime shares with the host (a bind mount for bubblewrap,
// --host-uds for gVisor), or, where the host reaches the sandbox over a
// network (a Pod), on TCP with a per-sandbox token (see auth.go). It runs commands with stdin, a timeout and output
// caps, streaming output as it is produced; keeps one persistent bash and one
// persistent Python interpreter per sandbox so that state (cwd, variables)
// survives between executions; and serves file operations confined to the
// workspace directory.
//
// The wire format is deliberately plain: JSON requests, newline-delimited JSON
// event streams for executions, raw bytes for file contents.
package agent

import (
	"encoding/json"
	"time"
)

// Language selects how ExecRequest.Code is run.
type Language string

const (
	// Shell runs Code as a bash script in the sandbox's persistent shell:
	// cwd, variables and functions carry over to the next execution.
	Shell Language = "shell"
	// Python runs Code in the sandbox's persistent Python interpreter; the
	// value of a trailing expression is returned as the result.
	Python Language = "python"
	// Command runs Argv as a fresh process in the workspace (no shell).
	Command Language = "command"
)

// Status is the outcome of an execution, with Azure's spelling.
type Status string

const (
	StatusSuccess Status = "Success"
	StatusFailure Status = "Failure"
	StatusTimeout Status = "Timeout"
)

// Default limits applied by the agent when a request leaves them zero.
const (
	DefaultTimeout        = 220 * time.Second
	DefaultMaxOutputBytes = 1 << 20
)

// ExecRequest asks the agent to run code.
type ExecRequest struct {
	Language Language `json:"language"`
	Code     string   `json:"code,omitempty"`
	Argv     []string `json:"argv,omitempty"`
	Stdin    string   `json:"stdin,omitempty"`
	// TimeoutMillis bounds the execution's wall time; the process tree is
	// killed when it passes.
	TimeoutMillis int64 `json:"timeoutMillis,omitempty"`
	// MaxOutputBytes caps stdout and stderr each; the rest is discarded and
	// the result says it was truncated.
	MaxOutputBytes int64 `json:"maxOutputBytes,omitempty"`
}

// Event is one line of an execution's stream: a chunk of output, or the
// final result (always last).
type Event struct {
	Stdout string  `json:"stdout,omitempty"`
	Stderr string  `json:"stderr,omitempty"`
	Result *Result `json:"result,omitempty"`
}

// Result is how an execution ended.
type Result struct {
	Status   Status `json:"status"`
	ExitCode int    `json:"exitCode"`
	// Signal names the signal that killed the process, if one did.
	Signal string `json:"signal,omitempty"`
	// Value is the JSON value of a trailing Python expression (null if none).
	Value json.RawMessage `json:"value,omitempty"`
	// Images are the figures a Python execution drew (matplotlib's show(),
	// or figures still open when it ended), in order; the driver returns at
	// most MaxImages, of at most MaxImageBytes in all.
	Images []Image `json:"images,omitempty"`
	// Error describes a Python exception or why the execution could not run.
	Error           string `json:"error,omitempty"`
	DurationMillis  int64  `json:"durationMillis"`
	StdoutTruncated bool   `json:"stdoutTruncated,omitempty"`
	StderrTruncated bool   `json:"stderrTruncated,omitempty"`
	// StateReset is set when the persistent interpreter had to be restarted
	// (it exited or was killed), so earlier session state is gone.
	StateReset bool `json:"stateReset,omitempty"`
	// Processes is how many processes the sandbox holds after the execution
	// (the agent aside), and MaxProcs the limit user code runs under (0:
	// none): many left behind means runaway processes, such as a fork bomb.
	Processes int `json:"processes"`
	MaxProcs  int `json:"maxProcs,omitempty"`
}

// Image is a figure an execution returned.
type Image struct {
	Format string `json:"format"` // "png"
	Data   []byte `json:"data"`   // the encoded image (base64 in JSON)
}

// Bounds on the figures of one Python execution (the driver's defaults;
// past them, a figure is dropped with a note on stderr).
const (
	MaxImages        = 4
	MaxImageBytes    = 4 << 20 // all of an execution's PNGs together
	MaxOneImageBytes = 2 << 20 // one PNG
)

// FileInfo describes a file in the workspace.
type FileInfo struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
	IsDir   bool      `json:"isDir,omitempty"`
	Mode    string    `json:"mode,omitempty"`
	Symlink bool      `json:"symlink,omitempty"`
}

// ErrorBody is the JSON body of an agent error response.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes the agent returns; the client maps them to typed errors.
const (
	CodeNotFound    = "NotFound"
	CodeBadRequest  = "BadRequest"
	CodeInternal    = "Internal"
	CodeUnavailable = "Unavailable"
	// CodeDiskFull: the sandbox's disk has no room left (ENOSPC, EDQUOT).
	CodeDiskFull = "DiskFull"
)
