package hostlocal

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The index answers "which addresses does this attachment hold" without
// reading every address file, which is what makes the reference's ADD and
// DEL linear in the number of allocations. It lives in <network>/.knit/,
// one small file per owner (named by a hash of the owner key, holding the
// key and its addresses as JSON), plus a stamp.
//
// The address files stay the only truth about whether an address is taken
// (reserve uses O_EXCL), and every address the index names is re-read
// before it is released, so a stale index can never release or hand out
// someone else's address. What the index must never do is miss an address
// (that would leak it on DEL), hence the stamp: after each operation knit
// sets the mtime of the network directory and of .knit to an artificial
// time one second in the past and records the resulting mtimes. Any later
// change to either directory by anyone else — the reference plugin
// creating or removing an address file, a crash halfway through an
// operation — sets the mtime to the current time, which cannot equal the
// recorded one whatever the filesystem's timestamp granularity, and the
// next knit operation rebuilds the index with one scan.
//
// Index files never contain "\r\n" and start with '{', so the reference's
// walk (which reads every file under the network directory, .knit
// included) can never mistake one for an address owned by a container.
const (
	indexDir     = ".knit"
	stampName    = "stamp"
	stampVersion = "knit-hostlocal-index-1"
	tmpPrefix    = ".knit."
)

type indexEntry struct {
	Owner string       `json:"owner"`
	IPs   []netip.Addr `json:"ips"`
}

func (s *store) indexPath() string { return filepath.Join(s.dir, indexDir) }

func entryName(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(sum[:16])
}

// ensureIndex checks the stamp once per operation and rebuilds the index
// when anything but knit changed the directory since knit's last
// operation.
func (s *store) ensureIndex() error {
	if s.indexOK {
		return nil
	}
	want, err := s.stampValue()
	if err == nil {
		var got []byte
		got, err = os.ReadFile(filepath.Join(s.indexPath(), stampName))
		if err == nil && string(got) == want {
			s.indexOK = true
			return nil
		}
	}
	return s.rebuild()
}

// lookup returns the addresses the index records for owner.
func (s *store) lookup(owner string) ([]netip.Addr, error) {
	if err := s.ensureIndex(); err != nil {
		return nil, err
	}
	e, err := s.readEntry(owner)
	if err == nil {
		return e.IPs, nil
	}
	if !errors.Is(err, errBadEntry) {
		return nil, err
	}
	// Someone edited .knit behind the stamp's back: start over from the
	// address files.
	if err := s.rebuild(); err != nil {
		return nil, err
	}
	e, err = s.readEntry(owner)
	return e.IPs, err
}

var errBadEntry = errors.New("malformed index entry")

func (s *store) readEntry(owner string) (indexEntry, error) {
	data, err := os.ReadFile(filepath.Join(s.indexPath(), entryName(owner)))
	if errors.Is(err, fs.ErrNotExist) {
		return indexEntry{}, nil
	}
	if err != nil {
		return indexEntry{}, fmt.Errorf("reading index: %w", err)
	}
	var e indexEntry
	if json.Unmarshal(data, &e) != nil || e.Owner != owner {
		return indexEntry{}, errBadEntry
	}
	return e, nil
}

// setEntry records owner's addresses; none removes the entry.
func (s *store) setEntry(owner string, ips []netip.Addr) error {
	s.dirty = true
	path := filepath.Join(s.indexPath(), entryName(owner))
	if len(ips) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("updating index: %w", err)
		}
		return nil
	}
	return writeEntry(path, owner, ips)
}

func writeEntry(path, owner string, ips []netip.Addr) error {
	ips = slices.Clone(ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	data, err := json.Marshal(indexEntry{Owner: owner, IPs: slices.Compact(ips)})
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("updating index: %w", err)
	}
	return nil
}

// rebuild replaces the index with one made from the address files.
func (s *store) rebuild() error {
	owners, err := s.scan()
	if err != nil {
		return err
	}
	return s.writeIndex(owners)
}

// writeIndex writes a complete index for owners (address → owner key) into
// a fresh directory and swaps it in, so a crash leaves either the old or
// the new one (and, either way, a stamp that no longer matches).
func (s *store) writeIndex(owners map[netip.Addr]string) error {
	s.dirty = true
	if err := s.removeLeftovers(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.dir, tmpPrefix+"new-")
	if err == nil {
		err = os.Chmod(tmp, 0o755) // like the network directory
	}
	if err != nil {
		return fmt.Errorf("rebuilding index: %w", err)
	}
	byOwner := map[string][]netip.Addr{}
	for ip, owner := range owners {
		if owner != "" { // an empty file names nobody; only GC removes it
			byOwner[owner] = append(byOwner[owner], ip)
		}
	}
	for owner, ips := range byOwner {
		if err := writeEntry(filepath.Join(tmp, entryName(owner)), owner, ips); err != nil {
			os.RemoveAll(tmp)
			return err
		}
	}
	if err := s.swapIndex(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	s.indexOK = true
	return nil
}

func (s *store) swapIndex(tmp string) error {
	old := tmp + "-old"
	err := os.Rename(s.indexPath(), old)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rebuilding index: %w", err)
	}
	if err := os.Rename(tmp, s.indexPath()); err != nil {
		return fmt.Errorf("rebuilding index: %w", err)
	}
	return os.RemoveAll(old)
}

// removeLeftovers deletes temporary index directories a crash left behind.
func (s *store) removeLeftovers() error {
	ents, err := readDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
				return fmt.Errorf("removing %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// stampValue is what the stamp must say for the index to be trusted: the
// current mtimes of the network directory and of the index directory.
func (s *store) stampValue() (string, error) {
	var d, x unix.Stat_t
	if err := unix.Stat(s.dir, &d); err != nil {
		return "", err
	}
	if err := unix.Stat(s.indexPath(), &x); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %d.%09d %d.%09d\n", stampVersion, d.Mtim.Sec, d.Mtim.Nsec, x.Mtim.Sec, x.Mtim.Nsec), nil
}

// restamp sets both directories' mtimes to a moment that has already
// passed, then records them (see the comment at the top of this file).
func (s *store) restamp() error {
	// Open (maybe create) the stamp file first: creating it changes the
	// index directory's mtime, which must happen before the stamp is set.
	f, err := os.OpenFile(filepath.Join(s.indexPath(), stampName), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	t := unix.NsecToTimespec(time.Now().Add(-time.Second).UnixNano())
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, t}
	for _, dir := range []string{s.dir, s.indexPath()} {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts, 0); err != nil {
			return err
		}
	}
	v, err := s.stampValue()
	if err != nil {
		return err
	}
	return overwrite(f, []byte(v))
}

// overwrite replaces f's content with data in place. Truncating to zero
// and writing again makes ext4 free the file's block and allocate a new
// one (~0.2 ms each time on this path); a rewrite of the same length, the
// usual case for the stamp and last_reserved_ip, touches only the page.
// Readers hold the network lock, so they never see a half-written file.
func overwrite(f *os.File, data []byte) error {
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > int64(len(data)) {
		return f.Truncate(int64(len(data)))
	}
	return nil
}

// overwriteFile is overwrite on the file at path, created if missing.
func overwriteFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	err = overwrite(f, data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
