package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// tutorialStep is one step of an Azure tutorial: a bash snippet as the page
// gives it (az rest replaced by the berth CLI), and what the page says its
// output shows.
type tutorialStep struct {
	name   string
	script string
	check  func(t *testing.T, out string)
}

// The steps shared by Azure's pages: the endpoint and key (the pages'
// `az rest … --query properties.mcpServerSettings.mcpServerEndpoint` and
// `az rest --method POST …/fetchMCPServerCredentials --query apiKey`),
// then initialize, as the pages send it: no params, no Accept,
// no MCP-Protocol-Version, no session.
const (
	azEndpoint = `MCP_ENDPOINT=$(berth pool show "$SESSION_POOL_NAME" -o json | jq -r '.endpoints.mcp')
API_KEY=$(berth pool credentials "$SESSION_POOL_NAME" -o json | jq -r '.apiKey')
echo "MCP_ENDPOINT=$MCP_ENDPOINT"
echo "API_KEY=$API_KEY"`
	azInitialize = `curl -sS -X POST "$MCP_ENDPOINT" \
    -H "Content-Type: application/json" \
    -H "x-ms-apikey: $API_KEY" \
    -d '{ "jsonrpc": "2.0", "id": "1", "method": "initialize" }'`
)

// launchStep is the pages' "Launch … environment" step with the tool they
// name, and the jq expression of the 2026 pages.
func launchStep(tool string) tutorialStep {
	return tutorialStep{
		name: "launch " + tool,
		script: `ENVIRONMENT_RESPONSE=$(curl -sS -X POST "$MCP_ENDPOINT" \
    -H "Content-Type: application/json" \
    -H "x-ms-apikey: $API_KEY" \
    -d '{ "jsonrpc": "2.0", "id": "2", "method": "tools/call", "params": { "name": "` + tool + `", "arguments": {} } }')

echo $ENVIRONMENT_RESPONSE
ENVIRONMENT_ID=$(echo $ENVIRONMENT_RESPONSE | jq -r '.result.structuredContent.environmentId')
echo $ENVIRONMENT_ID`,
		check: func(t *testing.T, out string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 || !regexp.MustCompile(`^env-[0-9a-f]{24}$`).MatchString(lines[1]) {
				t.Fatalf("no environmentId from jq: %q", out)
			}
			var resp struct {
				ID     string
				Result struct{ IsError bool }
			}
			if err := json.Unmarshal([]byte(lines[0]), &resp); err != nil || resp.ID != "2" || resp.Result.IsError {
				t.Fatalf("launch response: %v %s", err, lines[0])
			}
		},
	}
}

// runStep is a tools/call of the pages with their argument quoting
// ("'"$ENVIRONMENT_ID"'").
func runStep(id, tool, argName, arg string, want ...string) tutorialStep {
	return tutorialStep{
		name: tool + " " + id,
		script: `curl -sS -X POST "$MCP_ENDPOINT" \
    -H "Content-Type: application/json" \
    -H "x-ms-apikey: $API_KEY" \
    -d '{
        "jsonrpc": "2.0",
        "id": "` + id + `",
        "method": "tools/call",
        "params": {
            "name": "` + tool + `",
            "arguments": {
                "environmentId": "'"$ENVIRONMENT_ID"'",
                "` + argName + `": ` + arg + `
            }
        }
    }'`,
		check: func(t *testing.T, out string) {
			// "The response includes command results in the stdout field
			// within structuredContent": one JSON document, which jq reads.
			var resp struct {
				ID     string
				Result struct {
					IsError           bool
					StructuredContent struct{ Stdout, Stderr string }
				}
			}
			if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.ID != id || resp.Result.IsError {
				t.Fatalf("response is not the tool's JSON-RPC result: %v %s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(resp.Result.StructuredContent.Stdout, w) {
					t.Fatalf("stdout %q lacks %q", resp.Result.StructuredContent.Stdout, w)
				}
			}
		},
	}
}

// checkInitialize checks the initialize answer as the pages read it:
// "a response that includes protocolVersion (2025-03-26) and serverInfo"
// (and capabilities.tools). serverInfo.name is Berth's own.
func checkInitialize(t *testing.T, out string) {
	var resp struct {
		ID     string
		Result struct {
			ProtocolVersion string
			ServerInfo      struct{ Name string }
			Capabilities    struct{ Tools *json.RawMessage }
		}
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.ID != "1" {
		t.Fatalf("initialize: not one JSON-RPC response: %v %q", err, out)
	}
	if resp.Result.ProtocolVersion != "2025-03-26" || resp.Result.ServerInfo.Name == "" || resp.Result.Capabilities.Tools == nil {
		t.Fatalf("initialize result: %s", out)
	}
}

// TestAzureMCPTutorials replays, with real curl and jq against a real
// Berth, the MCP flow of Azure's pages, step by step, each step a separate
// bash run carrying only the shell variables the pages set
// (MCP_ENDPOINT, API_KEY, ENVIRONMENT_ID):
//   - learn.microsoft.com/azure/container-apps/sessions-tutorial-shell-mcp,
//     "Tutorial: Use MCP with dynamic sessions (shell)", ms.date 02/18/2026
//     (MicrosoftDocs/azure-docs@03e5750a);
//   - …/sessions-tutorial-python-mcp, "Tutorial: Use MCP with dynamic
//     sessions (Python)", ms.date 02/19/2026 (same commit), and its version
//     of ms.date 11/05/2025, which launches with launchPythonEnvironment and
//     has the reader paste the environmentId;
//   - a Container Apps shell-sessions lab ("Segment 4 — Use an MCP server
//     with shell dynamic sessions"), which launches with
//     launchShellEnvironment.
func TestAzureMCPTutorials(t *testing.T) {
	testutil.RequireTool(t, "curl")
	testutil.RequireTool(t, "jq")
	b := startBerth(t, "")
	b.createPool("aca-shell-sessions", "--type", "shell", "--mcp")
	b.createPool("aca-python-sessions", "--type", "python", "--mcp")
	bin := t.TempDir()
	if err := os.Symlink(b.bin, filepath.Join(bin, "berth")); err != nil {
		t.Fatal(err)
	}
	setup := tutorialStep{name: "endpoint and key", script: azEndpoint, check: func(t *testing.T, out string) {
		if !strings.Contains(out, "MCP_ENDPOINT="+b.info.PublicURL+"/pools/") || strings.Contains(out, "API_KEY=\n") {
			t.Fatalf("endpoint and key: %q", out)
		}
	}}
	initialize := tutorialStep{name: "initialize", script: azInitialize, check: checkInitialize}
	tutorials := []struct {
		name, pool string
		steps      []tutorialStep
	}{
		{"shell 2026-02-18", "aca-shell-sessions", []tutorialStep{setup, initialize, launchStep("launchShell"),
			runStep("3", "runShellCommandInRemoteEnvironment", "shellCommand", `"echo Hello from Azure Container Apps Shell Session!"`,
				"Hello from Azure Container Apps Shell Session!\n"),
			runStep("4", "runShellCommandInRemoteEnvironment", "shellCommand", `"cat /etc/os-release && uname -a"`, "PRETTY_NAME=", "Linux"),
		}},
		{"python 2026-02-19", "aca-python-sessions", []tutorialStep{setup, initialize, launchStep("launchShell"),
			runStep("3", "runPythonCodeInRemoteEnvironment", "pythonCode", `"import sys; print(f\"Python {sys.version}\")"`, "Python 3."),
			runStep("4", "runPythonCodeInRemoteEnvironment", "pythonCode",
				`"import math\nresults = {n: math.factorial(n) for n in range(1, 11)}\nfor k, v in results.items():\n    print(f\"{k}! = {v}\")"`,
				"1! = 1\n", "10! = 3628800\n"),
		}},
		{"python 2025-11-05", "aca-python-sessions", []tutorialStep{setup, initialize, launchStep("launchPythonEnvironment"),
			runStep("3", "runPythonCodeInRemoteEnvironment", "pythonCode", `"print(\"Hello from Azure Container Apps Python session!\")"`,
				"Hello from Azure Container Apps Python session!\n"),
		}},
		{"shell lab", "aca-shell-sessions", []tutorialStep{setup, initialize, launchStep("launchShellEnvironment"),
			runStep("3", "runShellCommandInRemoteEnvironment", "shellCommand", `"echo Hello from Azure Container Apps shell dynamic session!"`,
				"Hello from Azure Container Apps shell dynamic session!\n"),
		}},
	}
	for _, tu := range tutorials {
		t.Run(tu.name, func(t *testing.T) {
			vars := map[string]string{"SESSION_POOL_NAME": tu.pool}
			for _, st := range tu.steps {
				out := runTutorialStep(t, b, bin, vars, st.script)
				t.Logf("%s:\n%s", st.name, out)
				st.check(t, out)
			}
		})
	}
}

// runTutorialStep runs one step with bash and returns its stdout; the
// variables it sets (MCP_ENDPOINT, API_KEY, ENVIRONMENT_ID) are carried
// to the next step, as in the reader's terminal.
func runTutorialStep(t *testing.T, b *berth, bin string, vars map[string]string, script string) string {
	t.Helper()
	const marker = "\n--- vars ---\n"
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script+`
printf '`+strings.ReplaceAll(marker, "\n", `\n`)+`'
printf 'MCP_ENDPOINT=%s\nAPI_KEY=%s\nENVIRONMENT_ID=%s\n' "${MCP_ENDPOINT:-}" "${API_KEY:-}" "${ENVIRONMENT_ID:-}"`)
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "BERTH_DATA_DIR=" + b.dataDir}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("step failed: %v\n%s\nstdout: %s\nstderr: %s", err, script, stdout.String(), stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("step wrote to stderr (curl -sS shows errors there): %s", stderr.String())
	}
	out, carried, ok := strings.Cut(stdout.String(), marker)
	if !ok {
		t.Fatalf("no variables after the step: %s", stdout.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(carried), "\n") {
		if k, v, _ := strings.Cut(line, "="); v != "" {
			vars[k] = v
		}
	}
	return out
}
