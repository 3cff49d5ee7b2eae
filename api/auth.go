package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/lethehq/lethe/internal/config"
)

// permission is what an endpoint needs.
type permission int

const (
	permReadRequests permission = iota
	permWriteRequests
	permReadHolds
	permWriteHolds
	permReadStatus
	permRiverUI
)

// allowed says which roles hold a permission. privacy manages requests,
// legal manages holds, auditor reads everything and changes nothing, ops
// reads everything and may open River UI. Only privacy and legal change
// anything.
func allowed(role string, p permission) bool {
	switch p {
	case permWriteRequests:
		return role == config.RolePrivacy
	case permWriteHolds:
		return role == config.RoleLegal
	case permReadRequests:
		return role == config.RolePrivacy || role == config.RoleAuditor || role == config.RoleOps
	case permReadHolds:
		return role == config.RoleLegal || role == config.RoleAuditor || role == config.RoleOps
	case permReadStatus:
		return true
	case permRiverUI:
		return role == config.RoleOps
	}
	return false
}

type callerKey struct{}

// caller is the token that made a request.
type caller struct {
	Name string
	Role string
}

func callerFrom(ctx context.Context) *caller {
	c, _ := ctx.Value(callerKey{}).(*caller)
	return c
}

// authenticate finds the token the request carries: a bearer token, or, so
// that a browser can open River UI, the password of HTTP basic auth. It
// hashes the presented token and compares it with every configured hash in
// constant time, without stopping at a match.
func (s *Server) authenticate(r *http.Request) *caller {
	var token string
	h := r.Header.Get("Authorization")
	if scheme, rest, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		token = strings.TrimSpace(rest)
	} else if _, pw, ok := r.BasicAuth(); ok {
		token = pw
	}
	if token == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(token))
	var found *caller
	for i := range s.tokens {
		t := &s.tokens[i]
		if subtle.ConstantTimeCompare(sum[:], t.Hash[:]) == 1 {
			found = &caller{Name: t.Name, Role: t.Role}
		}
	}
	return found
}

// authorize wraps next: 401 without a known token, 403 when the token's
// role lacks p.
func (s *Server) authorize(p permission, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := s.authenticate(r)
		if c == nil {
			if p == permRiverUI {
				w.Header().Set("WWW-Authenticate", `Basic realm="lethe River UI", charset="UTF-8"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="lethe"`)
			}
			writeProblem(w, r, http.StatusUnauthorized, "unauthenticated",
				"send Authorization: Bearer <token> with a token listed in http.tokens")
			return
		}
		if lw, ok := w.(*logWriter); ok {
			lw.caller = c
		}
		if !allowed(c.Role, p) {
			writeProblem(w, r, http.StatusForbidden, "forbidden",
				"token "+c.Name+" has role "+c.Role+", which may not do this")
			if r.Method != http.MethodGet {
				s.auditCall(r, c, http.StatusForbidden, nil)
			}
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}
