// Package store keeps keel's state in an embedded bbolt database in
// KEEL_HOME: app definitions, desired state, restart counts and exit
// history (as supervisor.AppRecord), plus named blobs such as the crash
// book. bbolt was chosen over SQLite because keel needs a crash-safe
// key/value file, not queries: bbolt is pure Go, small (about 0.3 MB of
// binary), copy-on-write with fsync on every commit, and its file lock
// keeps a second daemon out.
//
// A Store is safe for concurrent use.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keel-run/keel/internal/supervisor"
)

var (
	appsBucket  = []byte("apps")
	blobsBucket = []byte("blobs")
)

// Store is the embedded state database.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the database at path. It fails after a
// short wait if another process holds it.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("opening state %s: another keel daemon holds it", path)
		}
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{appsBucket, blobsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// SaveApp writes one app's record.
func (s *Store) SaveApp(rec supervisor.AppRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("saving app %s: %w", rec.Spec.Name, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(appsBucket).Put([]byte(rec.Spec.Name), b)
	})
	if err != nil {
		return fmt.Errorf("saving app %s: %w", rec.Spec.Name, err)
	}
	return nil
}

// DeleteApp forgets an app.
func (s *Store) DeleteApp(name string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(appsBucket).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("deleting app %s: %w", name, err)
	}
	return nil
}

// LoadApps returns every stored app, ordered by name. A record that cannot
// be read is skipped and reported in the error alongside the others.
func (s *Store) LoadApps() ([]supervisor.AppRecord, error) {
	var out []supervisor.AppRecord
	var bad []error
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(appsBucket).ForEach(func(k, v []byte) error {
			var rec supervisor.AppRecord
			if err := json.Unmarshal(v, &rec); err != nil || rec.Spec == nil {
				bad = append(bad, fmt.Errorf("app %s: unreadable record: %v", k, err))
				return nil
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("loading apps: %w", err)
	}
	if len(bad) > 0 && len(out) == 0 {
		return nil, fmt.Errorf("loading apps: %w", errors.Join(bad...))
	}
	return out, nil
}

// PutBlob stores v as JSON under key.
func (s *Store) PutBlob(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("saving %s: %w", key, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(blobsBucket).Put([]byte(key), b)
	})
	if err != nil {
		return fmt.Errorf("saving %s: %w", key, err)
	}
	return nil
}

// GetBlob reads the JSON stored under key into v; false if there is none.
func (s *Store) GetBlob(key string, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(blobsBucket).Get([]byte(key))
		if b == nil {
			return nil
		}
		found = true
		return json.Unmarshal(b, v)
	})
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	return found, nil
}
