package plugin

import (
	"maps"
	"slices"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// withGrants adds the consumer's WASI grants (ABI.md section 6) to cfg:
// exactly the environment variables and directories listed, nothing
// inherited from qrun's own process.
func withGrants(cfg wazero.ModuleConfig, s Spec) wazero.ModuleConfig {
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		cfg = cfg.WithEnv(k, s.Env[k])
	}
	if len(s.Dirs) == 0 {
		return cfg
	}
	fs := wazero.NewFSConfig()
	for _, d := range s.Dirs {
		if d.ReadWrite {
			// wazero's WASI refuses paths that climb out with "..", but a
			// symbolic link the guest made could point anywhere; so it
			// makes none.
			fs = fs.(sysfs.FSConfig).WithSysFSMount(noSymlinks{sysfs.DirFS(d.Host)}, d.Guest)
		} else {
			fs = fs.WithReadOnlyDirMount(d.Host, d.Guest)
		}
	}
	return cfg.WithFSConfig(fs)
}

// noSymlinks is a read-write directory in which the guest cannot create
// symbolic links.
type noSymlinks struct{ experimentalsys.FS }

// Symlink refuses: a link to "/" would open the whole host to the guest.
func (noSymlinks) Symlink(string, string) experimentalsys.Errno { return experimentalsys.EPERM }
