package s3dev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// BinaryEnv names the environment variable that overrides the versitygw
// binary.
const BinaryEnv = "LETHE_VERSITYGW"

const modulePath = "github.com/lethehq/lethe"

// resolveBinary returns the absolute path of the versitygw binary: binary
// if set, else $LETHE_VERSITYGW, else bin/versitygw in the module root.
func resolveBinary(binary string) (string, error) {
	source := "Options.Binary"
	if binary == "" {
		binary, source = os.Getenv(BinaryEnv), "$"+BinaryEnv
	}
	if binary == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		binary = filepath.Join(root, "bin", "versitygw")
		if _, err := os.Stat(binary); err != nil {
			return "", fmt.Errorf("error finding versitygw: %s is missing: run `make bin/versitygw` in %s (or set $%s)", binary, root, BinaryEnv)
		}
		return binary, nil
	}
	abs, err := filepath.Abs(binary)
	if err != nil {
		return "", fmt.Errorf("error finding versitygw: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("error finding versitygw from %s: %w", source, err)
	}
	return abs, nil
}

// moduleRoot walks up from the working directory to the directory whose
// go.mod declares the lethe module.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("error finding the lethe module root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && declaresModule(b, modulePath) {
			return dir, nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("error finding the lethe module root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("error finding versitygw: no go.mod of %s above the working directory; set $%s or `make bin/versitygw` in the lethe checkout", modulePath, BinaryEnv)
		}
		dir = parent
	}
}

// declaresModule reports whether the go.mod text gomod has "module path".
func declaresModule(gomod []byte, path string) bool {
	for line := range strings.Lines(string(gomod)) {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == path
		}
	}
	return false
}
