// Command echoapp is an MCP server for the e2e tests that shows what a
// request carried: its tool "headers" and its path /echo answer with the
// request's headers as JSON. Its tools "getenv", "readfile" and "run" show
// what the app sees in its sandbox (an environment variable, a file, a
// command's output). It listens on 127.0.0.1:$PORT.
package main

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	s := mcp.NewServer(&mcp.Implementation{Name: "echoapp", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "headers", Description: "the request's headers"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			b, _ := json.Marshal(req.Extra.Header)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "getenv", Description: "an environment variable"},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			Name string `json:"name"`
		}) (*mcp.CallToolResult, any, error) {
			return text(os.Getenv(in.Name)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "readfile", Description: "a file's content, or the error reading it"},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			Path string `json:"path"`
		}) (*mcp.CallToolResult, any, error) {
			b, err := os.ReadFile(in.Path)
			if err != nil {
				return text("error: " + err.Error()), nil, nil
			}
			return text(string(b)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "run", Description: "a sh command's combined output"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in struct {
			Command string `json:"command"`
		}) (*mcp.CallToolResult, any, error) {
			out, err := exec.CommandContext(ctx, "/bin/sh", "-c", in.Command).CombinedOutput()
			if err != nil {
				out = append(out, []byte("\nerror: "+err.Error())...)
			}
			return text(string(out)), nil, nil
		})
	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
