package image

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func configOf(cf *v1.ConfigFile) Config {
	c := cf.Config
	out := Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}
	seen := map[int]bool{}
	for p := range c.ExposedPorts {
		num, _, _ := strings.Cut(p, "/")
		if n, err := strconv.Atoi(num); err == nil && n > 0 && n < 65536 && !seen[n] {
			seen[n] = true
			out.ExposedPorts = append(out.ExposedPorts, n)
		}
	}
	sort.Ints(out.ExposedPorts)
	return out
}

// fixups prepare a root to be mounted read-only with the runtime's mounts
// on top: their mount points must exist, since nothing can create them in
// a read-only root.
func fixups(root *os.Root, workDir string, shift uint32, keep bool) error {
	id := int(shift)
	if keep {
		id = -1 // Lchown leaves owners that are -1 as they are
	}
	if err := root.Chown(".", id, id); err != nil {
		return err
	}
	if err := root.Chmod(".", 0o755); err != nil {
		return err
	}
	dirs := []struct {
		name string
		mode os.FileMode
	}{{"proc", 0o555}, {"dev", 0o755}, {"sys", 0o555}, {"tmp", 0o1777 | os.ModeSticky}, {"run", 0o755},
		{"etc", 0o755}, {"mnt", 0o755}, {"mnt/data", 0o755}, {".berth", 0o755}}
	for _, d := range dirs {
		if err := ensureDir(root, d.name, d.mode&os.ModePerm|d.mode&os.ModeSticky, id); err != nil {
			return fmt.Errorf("/%s: %w", d.name, err)
		}
	}
	for _, f := range []string{"etc/resolv.conf", "etc/hosts", "etc/hostname"} {
		if _, err := root.Lstat(f); err == nil {
			continue // the image's own (a symlink is fine: the runtime binds over it)
		}
		if err := root.WriteFile(f, nil, 0o644); err != nil {
			return fmt.Errorf("/%s: %w", f, err)
		}
		if err := root.Lchown(f, id, id); err != nil {
			return err
		}
	}
	if workDir != "" {
		wd, err := cleanName(strings.TrimPrefix(path.Clean("/"+workDir), "/"))
		if err != nil {
			return fmt.Errorf("working directory %q: %w", workDir, err)
		}
		if wd != "." {
			if err := ensureDir(root, wd, 0o755, id); err != nil {
				return fmt.Errorf("working directory %q: %w", workDir, err)
			}
		}
	}
	return nil
}

// ensureDir creates a directory unless the image has one (or a symlink to
// one) there.
func ensureDir(root *os.Root, name string, mode os.FileMode, id int) error {
	if fi, err := root.Stat(name); err == nil {
		if !fi.IsDir() {
			return errors.New("exists and is not a directory")
		}
		return nil
	}
	if d := path.Dir(name); d != "." {
		if err := ensureDir(root, d, 0o755, id); err != nil {
			return err
		}
	}
	if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := root.Chmod(name, mode|os.ModeDir); err != nil {
		return err
	}
	return root.Lchown(name, id, id)
}

// resolveUser sets c.UID, c.GID and c.Home from c.User ("name", "uid",
// "name:group", "uid:gid") through the image's own /etc/passwd and
// /etc/group. A numeric uid needs no passwd entry (its gid is then 0, as
// with Docker); a name the image does not know is an error.
func resolveUser(root *os.Root, c *Config) error {
	userPart, groupPart, hasGroup := strings.Cut(c.User, ":")
	if userPart == "" {
		userPart = "0"
	}
	c.Home = "/"
	found := false
	for _, p := range readColon(root, "etc/passwd") {
		if len(p) >= 7 && (p[0] == userPart || p[2] == userPart) {
			uid, err1 := parseID(p[2])
			gid, err2 := parseID(p[3])
			if err1 != nil || err2 != nil {
				continue
			}
			c.UID, c.GID, c.Home, found = uid, gid, p[5], true
			break
		}
	}
	if !found {
		uid, err := parseID(userPart)
		if err != nil {
			return fmt.Errorf("user %q is not in the image's /etc/passwd", userPart)
		}
		c.UID, c.GID = uid, 0
	}
	if !hasGroup {
		return nil
	}
	for _, g := range readColon(root, "etc/group") {
		if len(g) >= 3 && (g[0] == groupPart || g[2] == groupPart) {
			if gid, err := parseID(g[2]); err == nil {
				c.GID = gid
				return nil
			}
		}
	}
	gid, err := parseID(groupPart)
	if err != nil {
		return fmt.Errorf("group %q is not in the image's /etc/group", groupPart)
	}
	c.GID = gid
	return nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

func readColon(root *os.Root, file string) [][]string {
	f, err := root.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
