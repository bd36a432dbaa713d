package dataplane

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestResolveName(t *testing.T) {
	for _, tc := range []struct {
		dir, name, want string
		ok              bool
	}{
		{"", "a.txt", "a.txt", true},
		{"", "/mnt/data/a.txt", "a.txt", true},
		{"/mnt/data", "a.txt", "a.txt", true},
		{"/mnt/data/", "sub/a.txt", "sub/a.txt", true},
		{"/", "a.txt", "a.txt", true},
		{"sub", "a.txt", "sub/a.txt", true},
		{"/mnt/data/sub", "/mnt/data/a.txt", "sub/a.txt", true},
		{"", "mnt/data/a.txt", "a.txt", true}, // "files//mnt/data/a.txt" after path cleaning
		{"", "mnt/data/sub/a.txt", "sub/a.txt", true},
		{"sub", "mnt/data/a.txt", "sub/a.txt", true},
		{"", "mnt/database/x", "mnt/database/x", true},
		{"", "mnt/data/../../x", "", false},
		{"", "/etc/passwd", "", false},
		{"", "/mnt/database/x", "", false},
		{"", "../x", "", false},
		{"..", "x", "", false},
		{"", "/mnt/data", "", false},
	} {
		got, err := resolveName(tc.dir, tc.name)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("resolveName(%q, %q) = %q, %v; want %q ok=%v", tc.dir, tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestSniffBoundary(t *testing.T) {
	for _, tc := range []struct {
		head, want string
		ok         bool
	}{
		{"--0f3a9c\r\nContent-Disposition: form-data", "0f3a9c", true},
		{"------formdata-undici-012345678901\r\n", "----formdata-undici-012345678901", true},
		{`{"code": "print(1)"}`, "", false},
		{"--\r\n", "", false},
		{"--no-line-end", "", false},
		{"--bad\x00char\r\n", "", false},
	} {
		got, ok := sniffBoundary([]byte(tc.head))
		if ok != tc.ok || got != tc.want {
			t.Errorf("sniffBoundary(%q) = %q, %v; want %q, %v", tc.head, got, ok, tc.want, tc.ok)
		}
	}
}

func TestResultString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want any
	}{
		{"", nil},
		{"null", nil},
		{"42", "42"},
		{`"nan"`, "nan"},
		{`{"a":[1,2]}`, `{"a":[1,2]}`},
	} {
		got := resultString(json.RawMessage(tc.in))
		var v any
		if got != nil {
			v = *got
		}
		if v != tc.want {
			t.Errorf("resultString(%s) = %v; want %v", tc.in, v, tc.want)
		}
	}
}

func TestLegacyVersions(t *testing.T) {
	for v, want := range map[string]bool{"": true, "2024-02-02-preview": true, "2024-08-02-preview": true, "2024-09-01": true,
		"2024-10-02-preview": false, "2025-02-02-preview": false, "2025-10-02-preview": false} {
		if got := legacy(httptest.NewRequest("GET", "/pools/p/files?api-version="+v, nil)); got != want {
			t.Errorf("legacy(%q) = %v", v, got)
		}
	}
}

func TestEnums(t *testing.T) {
	for _, in := range []string{"", "inline", "Inline", "INLINE", "InlineText"} {
		if code, err := decodeCode(in, "x"); err != nil || code != "x" {
			t.Errorf("decodeCode(%q) = %q, %v", in, code, err)
		}
	}
	if code, err := decodeCode("InlineBase64", "ZWNobyBoaQ=="); err != nil || code != "echo hi" {
		t.Errorf("InlineBase64: %q, %v", code, err)
	}
	for _, bad := range []string{"Url", "inline64"} {
		if _, err := decodeCode(bad, "x"); err == nil {
			t.Errorf("decodeCode(%q) accepted", bad)
		}
	}
	for in, want := range map[string]bool{"": false, "synchronous": false, "Synchronous": false, "Asynchronous": true, "asynchronous": true} {
		if got, err := asynchronous(in); err != nil || got != want {
			t.Errorf("asynchronous(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := asynchronous("Later"); err == nil {
		t.Error("asynchronous(Later) accepted")
	}
}
