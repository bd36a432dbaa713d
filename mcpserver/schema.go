package mcpserver

import (
	"encoding/json"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// toolDef pairs a tool's declaration with its implementation.
type toolDef struct {
	tool    *mcp.Tool
	handler func(*tools) handlerFunc
}

func ptr[T any](v T) *T { return &v }

// Schemas of the arguments shared by several tools.
const (
	envIDSchema = `"environmentId": {
		"type": "string",
		"description": "The environment to use, as returned by launchShell (for example env-0123456789abcdef01234567).",
		"minLength": 4, "maxLength": 128
	}`
	timeoutSchema = `"timeoutInSeconds": {
		"type": "integer", "minimum": 1,
		"description": "Optional limit on the run time in seconds; it is capped at the pool's execution timeout (220 s unless configured otherwise). When it passes, every process of the execution is killed and status is Timeout."
	}`
	execErrorSchema = `"error": {
		"type": "object",
		"description": "Present when the execution failed beyond a non-zero exit code: type is Timeout, OutOfMemory, ProcessLimit, DiskFull or ExecutionError (for Python, the exception as 'Type: message').",
		"properties": {"type": {"type": "string"}, "message": {"type": "string"}},
		"required": ["type", "message"]
	}`
	statusSchema = `"status": {
		"type": "string", "enum": ["Success", "Failure", "Timeout"],
		"description": "Success when the code ran to completion without error, Failure otherwise, Timeout when it was killed at its time limit."
	}`
	truncatedSchema = `"stdoutTruncated": {"type": "boolean", "description": "Set when stdout passed 1 MiB and the rest was discarded."},
		"stderrTruncated": {"type": "boolean", "description": "Set when stderr passed 1 MiB and the rest was discarded."}`
	pathSchema = `"path": {
		"type": "string",
		"description": "File path relative to /mnt/data, the environment's working directory (for example results/out.csv), or an absolute path inside /mnt/data."
	}`
	fileOutputSchema = `{
		"type": "object",
		"properties": {
			"path": {"type": "string", "description": "The file's path relative to /mnt/data."},
			"size": {"type": "integer", "description": "Size in bytes."},
			"lastModifiedTime": {"type": "string", "format": "date-time"},
			"encoding": {"type": "string", "enum": ["utf-8", "base64"], "description": "How content is encoded: utf-8 text, or base64 for binary files."},
			"content": {"type": "string", "description": "The file's content."}
		},
		"required": ["path", "size"]
	}`
)

func schema(s string) json.RawMessage {
	if !json.Valid([]byte(s)) {
		panic("mcpserver: invalid schema: " + s)
	}
	return json.RawMessage(s)
}

var toolDefs = []toolDef{
	{
		tool: &mcp.Tool{
			Name:  ToolLaunchShell,
			Title: "Launch a sandboxed environment",
			Description: "Launch a new, isolated Linux environment (a sandbox of this Berth session pool) and return its environmentId. " +
				"Pass the environmentId to runShellCommandInRemoteEnvironment and runPythonCodeInRemoteEnvironment to run bash commands and Python code in it, " +
				"and to the file tools to move files in and out. State persists in an environment between calls: files in /mnt/data (the working directory), " +
				"the shell's current directory and exported variables, and Python variables and imports. Launch one environment per task and reuse it rather than " +
				"launching one per command; close it with closeRemoteEnvironment when done. An environment left idle longer than the pool's cooldown is destroyed: " +
				"if another tool reports that an environment does not exist, call launchShell again. Takes no arguments.",
			InputSchema: schema(`{"type": "object", "properties": {}, "additionalProperties": false}`),
			OutputSchema: schema(`{
				"type": "object",
				"properties": {"environmentId": {"type": "string", "description": "Identifier of the new environment; pass it to the other tools."}},
				"required": ["environmentId"]
			}`),
			Annotations: &mcp.ToolAnnotations{Title: "Launch environment", DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.launchShell },
	},
	{
		tool: &mcp.Tool{
			Name:  ToolRunShell,
			Title: "Run a shell command in an environment",
			Description: "Run a command in an environment created by launchShell and return its stdout, stderr, exit code and run time. " +
				"Give exactly one of shellCommand, a bash command line or script run in the environment's persistent shell (cd, exported variables and functions " +
				"carry over to later calls; the first call starts in /mnt/data), or execCommandAndArgs, a program and its arguments run directly without a shell " +
				"(no quoting needed; it starts in /mnt/data). A non-zero exitCode is reported in the result, not as a tool error. " +
				"Long-running commands stream their output as progress notifications when the call has a progress token. " +
				"Each of stdout and stderr is limited to 1 MiB; redirect large output to a file and read parts of it.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {
					` + envIDSchema + `,
					"shellCommand": {"type": "string", "description": "A bash command line or multi-line script, for example: ls -la && python3 --version"},
					"execCommandAndArgs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
						"description": "Instead of shellCommand: the program and its arguments, for example [\"python3\", \"-c\", \"print(1)\"]."},
					"stdin": {"type": "string", "description": "Optional text given to the command on its standard input."},
					` + timeoutSchema + `
				},
				"required": ["environmentId"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(`{
				"type": "object",
				"properties": {
					"stdout": {"type": "string"},
					"stderr": {"type": "string"},
					"exitCode": {"type": "integer", "description": "The command's exit code (0 for success; -1 if it was killed or could not start)."},
					"executionTimeInMilliseconds": {"type": "integer"},
					` + statusSchema + `,
					` + execErrorSchema + `,
					` + truncatedSchema + `
				},
				"required": ["stdout", "stderr", "exitCode", "executionTimeInMilliseconds"]
			}`),
			Annotations: &mcp.ToolAnnotations{Title: "Run shell command", OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.runShell },
	},
	{
		tool: &mcp.Tool{
			Name:  ToolRunPython,
			Title: "Run Python code in an environment",
			Description: "Run Python 3 code in the persistent interpreter of an environment created by launchShell. Variables, functions and imports persist " +
				"between calls in the same environment. The value of a trailing expression is returned as result (as JSON; null if the code ends with a statement), " +
				"print() output is in stdout, and an exception's traceback is in stderr with its summary in error. The working directory is /mnt/data. " +
				"Long-running code streams its output as progress notifications when the call has a progress token. Each of stdout and stderr is limited to 1 MiB. " +
				"matplotlib figures (plt.show(), or figures left open) come back as PNG image content, at most 4 an execution; save more with savefig.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {
					` + envIDSchema + `,
					"pythonCode": {"type": "string", "description": "Python source to run, for example: import math\nmath.sqrt(2)"},
					` + timeoutSchema + `
				},
				"required": ["environmentId", "pythonCode"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(`{
				"type": "object",
				"properties": {
					"stdout": {"type": "string"},
					"stderr": {"type": "string"},
					"result": {"description": "JSON value of the code's trailing expression; else {\"type\":\"image\",\"format\":\"png\"} if the code drew a figure (the image follows as image content); else null."},
					"images": {"type": "integer", "description": "How many matplotlib figures the code drew (plt.show() or left open); each follows as PNG image content."},
					"executionTimeInMilliseconds": {"type": "integer"},
					` + statusSchema + `,
					` + execErrorSchema + `,
					` + truncatedSchema + `
				},
				"required": ["stdout", "stderr", "result", "executionTimeInMilliseconds"]
			}`),
			Annotations: &mcp.ToolAnnotations{Title: "Run Python code", OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.runPython },
	},
	{
		tool: &mcp.Tool{
			Name:  ToolUploadFile,
			Title: "Write a file into an environment",
			Description: "Create or replace a file in an environment's /mnt/data directory (parent directories are created). Give the content as text, " +
				"or as base64 with encoding \"base64\" for binary files. Files are limited to 8 MiB.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {
					` + envIDSchema + `,
					` + pathSchema + `,
					"content": {"type": "string", "description": "The file's content: text, or base64 when encoding is base64."},
					"encoding": {"type": "string", "enum": ["utf-8", "base64"], "default": "utf-8", "description": "How content is encoded (default utf-8)."}
				},
				"required": ["environmentId", "path", "content"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(fileOutputSchema),
			Annotations:  &mcp.ToolAnnotations{Title: "Upload file", IdempotentHint: true, OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.uploadFile },
	},
	{
		tool: &mcp.Tool{
			Name:  ToolDownloadFile,
			Title: "Read a file from an environment",
			Description: "Read a file from an environment's /mnt/data directory. Text files are returned as UTF-8 text, other files as base64 " +
				"(see encoding); images are also returned as image content. Files are limited to 8 MiB.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {` + envIDSchema + `, ` + pathSchema + `},
				"required": ["environmentId", "path"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(fileOutputSchema),
			Annotations:  &mcp.ToolAnnotations{Title: "Download file", ReadOnlyHint: true, OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.downloadFile },
	},
	{
		tool: &mcp.Tool{
			Name:        ToolListFiles,
			Title:       "List files in an environment",
			Description: "List the files and directories in an environment's /mnt/data directory, or in a subdirectory of it, with their sizes and modification times.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {
					` + envIDSchema + `,
					"path": {"type": "string", "description": "Optional subdirectory relative to /mnt/data (default: /mnt/data itself)."}
				},
				"required": ["environmentId"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(`{
				"type": "object",
				"properties": {
					"path": {"type": "string", "description": "The directory listed."},
					"files": {"type": "array", "items": {
						"type": "object",
						"properties": {
							"name": {"type": "string", "description": "Path relative to /mnt/data."},
							"type": {"type": "string", "enum": ["file", "directory", "symlink"]},
							"size": {"type": "integer"},
							"lastModifiedTime": {"type": "string", "format": "date-time"}
						},
						"required": ["name", "type", "size"]
					}}
				},
				"required": ["path", "files"]
			}`),
			Annotations: &mcp.ToolAnnotations{Title: "List files", ReadOnlyHint: true, OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.listFiles },
	},
	{
		tool: &mcp.Tool{
			Name:  ToolClose,
			Title: "Close an environment",
			Description: "Destroy an environment launched by launchShell, with its files and processes, freeing its place in the pool. " +
				"Use it when a task is finished; the environmentId cannot be used afterwards.",
			InputSchema: schema(`{
				"type": "object",
				"properties": {` + envIDSchema + `},
				"required": ["environmentId"],
				"additionalProperties": false
			}`),
			OutputSchema: schema(`{
				"type": "object",
				"properties": {"environmentId": {"type": "string"}, "closed": {"type": "boolean"}},
				"required": ["environmentId", "closed"]
			}`),
			Annotations: &mcp.ToolAnnotations{Title: "Close environment", DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		},
		handler: func(t *tools) handlerFunc { return t.closeEnvironment },
	},
}
