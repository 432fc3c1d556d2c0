package proc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// defaultPath is searched when the environment has no PATH (systemd's
// default).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LookPath finds the executable file names in the directories of pathEnv
// (a PATH value), the way the process's own execvp would — not in the
// calling process's PATH. A name that contains a slash is not searched; a
// relative one, and relative PATH entries, are relative to dir ("" is the
// current directory). The result is a path that contains a slash. The
// error is an *exec.Error wrapping exec.ErrNotFound when nothing matches,
// or the reason the named file cannot be executed.
func LookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if err := executable(under(dir, name)); err != nil {
			return "", &exec.Error{Name: name, Err: err}
		}
		return name, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = "./" + p
		}
		if executable(under(dir, p)) == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

func under(dir, p string) string {
	if dir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}
