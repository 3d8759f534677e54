package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
)

// exportRootMode is the permission of the export roots the server makes.
const exportRootMode = 0o755

// makeExportRoots makes the roots of the exports that do not exist yet,
// as mkdir -p would (mode 0755 whatever the umask), and logs each
// directory made at warn: on a fresh host the directories of the
// management plane (/var/lib/docker, /var/lib/kubelet, /var/log/pods)
// exist only once it has run. A read-only export is never made: one that
// is missing is an error, and then nothing is made. Run calls it once its
// listeners are open: a server that cannot listen makes nothing.
func makeExportRoots(exports []hostfs.Export, log *zap.Logger) error {
	var missing []string
	for _, e := range exports {
		if _, err := os.Stat(e.Path); !errors.Is(err, os.ErrNotExist) {
			continue // there, or an error hostfs.New reports
		}
		if e.ReadOnly {
			return fmt.Errorf("export %q: does not exist, and a read-only export is never created: create it on the host, or export it read-write", e.Path)
		}
		missing = append(missing, e.Path)
	}
	for _, p := range missing {
		made, err := mkdirAll(p)
		for _, d := range made {
			log.Warn("an export's directory did not exist: created it", zap.String("export", p), zap.String("created", d),
				zap.Stringer("mode", os.FileMode(exportRootMode)))
		}
		if err != nil {
			return fmt.Errorf("export %q: create: %w", p, err)
		}
	}
	return nil
}

// mkdirAll makes the missing directories of the absolute path p, parents
// first, and returns those it made.
func mkdirAll(p string) ([]string, error) {
	var missing []string
	for d := p; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if d == "/" {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, exportRootMode); err != nil && !errors.Is(err, os.ErrExist) {
			return made, err
		} else if err == nil {
			made = append(made, d)
			if err := os.Chmod(d, exportRootMode); err != nil {
				return made, err
			}
		}
	}
	return made, nil
}
