package config

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var varRef = regexp.MustCompile(`\$\{([^}]*)\}`)

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandNode replaces ${VAR} in every scalar value below n with the value of
// the environment variable VAR. Expansion happens on parsed values, so a
// secret holding YAML syntax cannot change the document's structure. An unset
// variable is an error that names the key it was used in.
func expandNode(n *yaml.Node, path string, lookup func(string) (string, bool)) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := expandNode(c, path, lookup); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			child := key
			if path != "" {
				child = path + "." + key
			}
			if err := expandNode(n.Content[i+1], child, lookup); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := expandNode(c, path+"["+strconv.Itoa(i)+"]", lookup); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		var firstErr error
		n.Value = varRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := ref[2 : len(ref)-1]
			if !varName.MatchString(name) {
				if firstErr == nil {
					firstErr = Errorf(path, "%q is not a valid variable reference: write ${NAME} with letters, digits and _", ref)
				}
				return ""
			}
			v, ok := lookup(name)
			if !ok && firstErr == nil {
				firstErr = Errorf(path, "environment variable %s is not set: set it, or change the key", name)
			}
			return v
		})
		if firstErr != nil {
			return firstErr
		}
		// An unquoted value is typed after expansion, as if it had been
		// written in place: "path_style: ${PS}" with PS=true is a bool.
		// A quoted one stays a string.
		if n.Style == 0 {
			n.Tag = ""
		}
	}
	return nil
}

// redactURL hides the password of a connection URL; other forms of
// connection string are hidden whole when they mention a password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err == nil && u.Scheme != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "redacted")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	if strings.Contains(s, "password") {
		return "<redacted>"
	}
	return s
}
