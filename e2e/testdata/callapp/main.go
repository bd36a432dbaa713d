// Command callapp is an MCP server for the e2e tests of app-to-app calls
// and workload identity. Its tools run inside its sandbox and call out the
// way an app's own code would, with Go's default HTTP client (which finds
// Berth's tunnel through http_proxy):
//
//   - headers: the request's headers, as JSON (it is also a call target);
//   - fetch {url, headers}: GETs url, answers "STATUS BODY";
//   - token {resource}: asks $IDENTITY_ENDPOINT for a token, answers its
//     JSON;
//   - call {url, bearer}: connects to the MCP server at url (with
//     Authorization: Bearer bearer if set) and answers its "headers" tool's
//     result.
//
// It listens on 127.0.0.1:$PORT (/echo answers with the request's
// headers), or serves stdio with -stdio.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type fetchIn struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
}

type tokenIn struct {
	Resource string `json:"resource"`
}

type callIn struct {
	URL    string `json:"url"`
	Bearer string `json:"bearer,omitempty"`
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func fetch(ctx context.Context, u string, h map[string]string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	for k, v := range h {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return fmt.Sprintf("%d %s", resp.StatusCode, b), nil
}

type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.tok != "" {
		r.Header.Set("Authorization", "Bearer "+b.tok)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func call(ctx context.Context, in callIn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := &mcp.StreamableClientTransport{Endpoint: in.URL, HTTPClient: &http.Client{Transport: bearer{in.Bearer}}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "callapp", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		return "", err
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "headers"})
	if err != nil {
		return "", err
	}
	if res.IsError || len(res.Content) == 0 {
		return "", fmt.Errorf("tool error: %+v", res)
	}
	return res.Content[0].(*mcp.TextContent).Text, nil
}

func main() {
	s := mcp.NewServer(&mcp.Implementation{Name: "callapp", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "headers", Description: "the request's headers"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			if req.Extra == nil {
				return text("{}"), nil, nil // stdio: no headers
			}
			b, _ := json.Marshal(req.Extra.Header)
			return text(string(b)), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fetch", Description: "GET a URL from inside the sandbox"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in fetchIn) (*mcp.CallToolResult, any, error) {
			out, err := fetch(ctx, in.URL, in.Headers)
			if err != nil {
				return nil, nil, err
			}
			return text(out), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "token", Description: "a token from the identity endpoint"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in tokenIn) (*mcp.CallToolResult, any, error) {
			u := os.Getenv("IDENTITY_ENDPOINT") + "?api-version=2019-08-01&resource=" + url.QueryEscape(in.Resource)
			out, err := fetch(ctx, u, map[string]string{"X-IDENTITY-HEADER": os.Getenv("IDENTITY_HEADER")})
			if err != nil {
				return nil, nil, err
			}
			return text(out), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "call", Description: "call another MCP server's headers tool"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in callIn) (*mcp.CallToolResult, any, error) {
			out, err := call(ctx, in)
			if err != nil {
				return nil, nil, err
			}
			return text(out), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "env", Description: "the identity and proxy variables"},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			b, _ := json.Marshal(map[string]string{
				"IDENTITY_ENDPOINT": os.Getenv("IDENTITY_ENDPOINT"), "IDENTITY_HEADER": os.Getenv("IDENTITY_HEADER"),
				"http_proxy": os.Getenv("http_proxy")})
			return text(string(b)), nil, nil
		})
	if len(os.Args) > 1 && os.Args[1] == "-stdio" {
		log.Fatal(s.Run(context.Background(), &mcp.StdioTransport{}))
	}
	mux := http.NewServeMux()
	// Other apps call it by name (Host "NAME"), which the go-sdk's
	// loopback check would refuse: Berth's front door has routed it.
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{DisableLocalhostProtection: true}))
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"host": r.Host, "header": r.Header})
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
