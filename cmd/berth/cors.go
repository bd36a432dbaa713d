package main

import (
	"flag"
	"strings"

	"github.com/berth-dev/berth/edge/cors"
)

// corsFlags are the CORS policy flags of app deploy and pool create|update
// (Container Apps' ingress.corsPolicy).
type corsFlags struct {
	origins, methods, headers, expose string
	maxAge                            int
	credentials, disable              bool
}

func (c *corsFlags) register(fs *flag.FlagSet, update bool) {
	fs.StringVar(&c.origins, "cors-allowed-origins", "", "CORS: comma-separated browser origins allowed (https://a.example, https://*.example.com for any subdomain, * for any); sets a CORS policy")
	fs.StringVar(&c.methods, "cors-allowed-methods", "", "CORS: comma-separated methods allowed (default GET,POST,DELETE,OPTIONS; * for any)")
	fs.StringVar(&c.headers, "cors-allowed-headers", "", "CORS: comma-separated request headers allowed besides MCP's (* for any)")
	fs.StringVar(&c.expose, "cors-expose-headers", "", "CORS: comma-separated response headers exposed besides Mcp-Session-Id and WWW-Authenticate")
	fs.IntVar(&c.maxAge, "cors-max-age", 0, "CORS: seconds a browser may cache a preflight (0: not sent)")
	fs.BoolVar(&c.credentials, "cors-allow-credentials", false, "CORS: send Access-Control-Allow-Credentials: true (not with origin *)")
	if update {
		fs.BoolVar(&c.disable, "cors-disable", false, "remove the CORS policy (berth up --allow-origin applies again)")
	}
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// given reports whether a CORS flag was on the command line.
func corsGiven(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || (strings.HasPrefix(f.Name, "cors-") && f.Name != "cors-disable") })
	return given
}

// spec is the policy the flags describe (nil if none was given).
func (c *corsFlags) spec(fs *flag.FlagSet) (*cors.Spec, error) {
	if !corsGiven(fs) {
		return nil, nil
	}
	if c.disable {
		return nil, usageError("--cors-disable cannot go with other --cors-* flags")
	}
	if strings.TrimSpace(c.origins) == "" {
		return nil, usageError("a CORS policy needs --cors-allowed-origins")
	}
	s := &cors.Spec{
		AllowedOrigins: splitList(c.origins), AllowedMethods: splitList(c.methods),
		AllowedHeaders: splitList(c.headers), ExposeHeaders: splitList(c.expose),
		MaxAge: c.maxAge, AllowCredentials: c.credentials,
	}
	if err := s.Normalize(); err != nil {
		return nil, usageError(err.Error())
	}
	return s, nil
}
