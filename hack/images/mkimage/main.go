// Command mkimage writes a single-layer OCI image archive (oci-layout,
// index.json, blobs) that `ctr images import` accepts, using only the
// standard library. It is used by the local cluster harness (hack/cluster)
// to produce images without a registry.
//
//	mkimage -name knit.local/testimage:latest -o out.tar \
//	    -file /usr/bin/busybox:/bin/busybox:0755 -symlink /bin/sh:busybox \
//	    -dir bin:/opt/knit/bin -entrypoint /bin/sh -env PATH=/bin
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// entry is one item of the layer, keyed by its absolute path in the image.
type entry struct {
	typ    byte // tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink
	src    string
	mode   int64
	target string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

func main() {
	var (
		name, out, workdir string
		files, dirs, links multi
		env, entrypoint    multi
		cmd                multi
	)
	flag.StringVar(&name, "name", "", "image reference, e.g. knit.local/testimage:latest (required)")
	flag.StringVar(&out, "o", "", "output archive path (required)")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.Var(&files, "file", "SRC:DEST[:MODE] add a regular file (repeatable)")
	flag.Var(&dirs, "dir", "SRCDIR:DEST add every regular file of SRCDIR (non-recursive) under DEST (repeatable)")
	flag.Var(&links, "symlink", "LINK:TARGET add a symlink (repeatable)")
	flag.Var(&env, "env", "K=V environment variable (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable, in order)")
	flag.Var(&cmd, "cmd", "cmd argument (repeatable, in order)")
	flag.Parse()
	if name == "" || out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(name, out, workdir, files, dirs, links, env, entrypoint, cmd); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(name, out, workdir string, files, dirs, links, env, entrypoint, cmd []string) error {
	entries := map[string]*entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = &entry{typ: tar.TypeDir, mode: 0o755}
			}
		}
	}
	for _, f := range files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("bad -file %q", f)
		}
		st, err := os.Stat(parts[0])
		if err != nil {
			return err
		}
		mode := int64(st.Mode().Perm())
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 32)
			if err != nil {
				return fmt.Errorf("bad mode in %q: %v", f, err)
			}
			mode = m
		}
		dst := path.Clean("/" + parts[1])
		entries[dst] = &entry{typ: tar.TypeReg, src: parts[0], mode: mode}
		addParents(dst)
	}
	for _, d := range dirs {
		src, dst, ok := strings.Cut(d, ":")
		if !ok {
			return fmt.Errorf("bad -dir %q", d)
		}
		dst = path.Clean("/" + dst)
		entries[dst] = &entry{typ: tar.TypeDir, mode: 0o755}
		addParents(dst)
		if err := addDir(entries, src, dst); err != nil {
			return err
		}
	}
	for _, l := range links {
		link, target, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("bad -symlink %q", l)
		}
		link = path.Clean("/" + link)
		entries[link] = &entry{typ: tar.TypeSymlink, target: target, mode: 0o777}
		addParents(link)
	}
	for _, d := range []string{"/tmp", "/etc", "/proc", "/sys", "/dev", "/run", "/var", "/root"} {
		if _, ok := entries[d]; !ok {
			entries[d] = &entry{typ: tar.TypeDir, mode: 0o755}
		}
	}
	entries["/tmp"].mode = 0o1777

	layer, err := buildLayer(entries)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)

	created := time.Unix(0, 0).UTC().Format(time.RFC3339)
	cfg := map[string]any{
		"created":      created,
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config": map[string]any{
			"Env":        env,
			"Entrypoint": entrypoint,
			"Cmd":        cmd,
			"WorkingDir": workdir,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history": []map[string]any{{"created": created, "created_by": "hack/images/mkimage"}},
	}
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(cfgBytes), Size: int64(len(cfgBytes))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(len(layer))}},
	}
	manBytes, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	tag := "latest"
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digest(manBytes),
			Size:      int64(len(manBytes)),
			Annotations: map[string]string{
				"io.containerd.image.name":          name,
				"org.opencontainers.image.ref.name": tag,
			},
			Platform: &platform{Architecture: runtime.GOARCH, OS: "linux"},
		}},
	}
	idxBytes, err := json.Marshal(index)
	if err != nil {
		return err
	}

	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	write := func(p string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	blob := func(b []byte) string { return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:") }
	for _, it := range []struct {
		p string
		b []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{blob(layer), layer},
		{blob(cfgBytes), cfgBytes},
		{blob(manBytes), manBytes},
		{"index.json", idxBytes},
	} {
		if err := write(it.p, it.b); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// addDir adds the regular files directly in src under dst. Hard links in src
// (bin/ links the multi-call plugin binary under every type name) stay hard
// links in the layer: the first name in sort order carries the data, the
// others link to it, so the image holds the binary once.
func addDir(entries map[string]*entry, src, dst string) error {
	des, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	first := map[[2]uint64]string{} // (dev, inode) -> image path holding the data
	names := make([]string, 0, len(des))
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		info, err := os.Lstat(filepath.Join(src, n))
		if err != nil || !info.Mode().IsRegular() {
			continue // skip sub-directories, symlinks, sockets, etc.
		}
		p := path.Join(dst, n)
		e := &entry{typ: tar.TypeReg, src: filepath.Join(src, n), mode: int64(info.Mode().Perm())}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if t, seen := first[key]; seen {
				e = &entry{typ: tar.TypeLink, target: strings.TrimPrefix(t, "/"), mode: e.mode}
			} else {
				first[key] = p
			}
		}
		entries[p] = e
	}
	return nil
}

func buildLayer(entries map[string]*entry) ([]byte, error) {
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths) // parents sort before children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, p := range paths {
		e := entries[p]
		name := strings.TrimPrefix(p, "/")
		h := &tar.Header{Name: name, Mode: e.mode, ModTime: epoch, Typeflag: e.typ, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		case tar.TypeSymlink, tar.TypeLink:
			h.Linkname = e.target
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		case tar.TypeReg:
			if err := addFile(tw, h, e.src); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, h *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return &fs.PathError{Op: "add", Path: src, Err: fs.ErrInvalid}
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
