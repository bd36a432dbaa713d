package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Prune removes every image inUse does not claim (inUse gets digests,
// "sha256:…"; nil claims none) and every blob no remaining image refers
// to. It returns the bytes freed.
func (s *Store) Prune(ctx context.Context, inUse func(digest string) bool) (int64, error) {
	ims, err := s.List()
	if err != nil {
		return 0, err
	}
	var freed int64
	keep := map[string]bool{}
	for _, im := range ims {
		if inUse != nil && inUse(im.Digest) {
			for _, b := range im.Blobs {
				keep[b] = true
			}
			continue
		}
		n, err := s.remove(ctx, im)
		freed += n
		if err != nil {
			return freed, err
		}
	}
	blobs, err := os.ReadDir(filepath.Join(s.dir, "blobs/sha256"))
	if err != nil {
		return freed, fmt.Errorf("image: %w", err)
	}
	for _, b := range blobs {
		if keep["sha256:"+b.Name()] {
			continue
		}
		fi, err := b.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(s.blobPath(b.Name())); err == nil {
			freed += fi.Size()
		}
	}
	return freed, nil
}

// remove deletes one image under its lock: the root is first renamed into
// tmp, so that it is gone at once and an interrupted removal is finished
// by the next Open.
func (s *Store) remove(ctx context.Context, im *Image) (int64, error) {
	hex := strings.TrimPrefix(im.Digest, "sha256:")
	l, err := lock(ctx, filepath.Join(s.dir, "locks", hex))
	if err != nil {
		return 0, err
	}
	defer l.unlock()
	dead := filepath.Join(s.dir, "tmp", hex+".removed")
	if err := os.Rename(s.rootPath(hex), dead); err != nil {
		return 0, fmt.Errorf("image: removing %s: %w", im.Digest, err)
	}
	_ = os.Remove(s.metaPath(hex))
	if err := os.RemoveAll(dead); err != nil {
		return 0, fmt.Errorf("image: removing %s: %w", im.Digest, err)
	}
	s.log.Info("image removed", "digest", im.Digest, "refs", im.Refs, "size", im.Size)
	return im.Size, nil
}
