package dataplane

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/agent"
	"github.com/berth-dev/berth/internal/httpapi"
	"github.com/berth-dev/berth/pool"
)

// API versions of Azure's data plane (Microsoft.App/DynamicSessions) whose
// shapes Berth serves. Requests name one in the api-version query
// parameter; where the shapes differ, the 2024-02-02-preview one is served
// to requests with no api-version or an older one, and the flat one of
// 2024-10-02-preview (the same in 2025-02-02-preview and
// 2025-10-02-preview) to the rest.
const (
	Version20240202 = "2024-02-02-preview"
	Version20241002 = "2024-10-02-preview"
	Version20250202 = "2025-02-02-preview"
	Version20251002 = "2025-10-02-preview"
)

// Versions lists them, oldest first.
var Versions = []string{Version20240202, Version20241002, Version20250202, Version20251002}

// legacy reports whether the request asks for the shapes of
// 2024-02-02-preview: {"properties":{…}} wrappers, files as
// {"value":[{"properties":{"filename","size","lastModifiedTime"}}]}.
// Versions are dates, so they compare as strings.
func legacy(r *http.Request) bool {
	v := r.URL.Query().Get("api-version")
	return v == "" || v < Version20241002
}

// decodeCode applies a codeInputType (any case, as clients spell it
// either way: "inline" in 2024-02-02-preview, "Inline" later) to code.
func decodeCode(inputType, code string) (string, error) {
	switch strings.ToLower(inputType) {
	case "", "inline", "inlinetext":
		return code, nil
	case "inlinebase64":
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(code))
		if err != nil {
			return "", httpapi.Errorf(http.StatusBadRequest, "InvalidCode", "codeInputType is InlineBase64 but code is not base64: "+err.Error())
		}
		return string(b), nil
	}
	return "", httpapi.Errorf(http.StatusBadRequest, "UnsupportedCodeInputType", fmt.Sprintf("codeInputType %q is not supported; use \"Inline\" (or InlineBase64, InlineText)", inputType))
}

// asynchronous parses an executionType (any case).
func asynchronous(executionType string) (bool, error) {
	switch strings.ToLower(executionType) {
	case "", "synchronous":
		return false, nil
	case "asynchronous":
		return true, nil
	}
	return false, httpapi.Errorf(http.StatusBadRequest, "UnsupportedExecutionType", fmt.Sprintf("executionType %q is not supported; use \"Synchronous\" or \"Asynchronous\"", executionType))
}

// poolLanguage is what a pool runs its "code" in.
func poolLanguage(p *pool.Pool) agent.Language {
	if p.Config().Type == pool.TypePython {
		return agent.Python
	}
	return agent.Shell
}
