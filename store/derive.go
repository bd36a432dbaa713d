package store

import (
	"crypto/hkdf"
	"crypto/sha256"
)

// DeriveKey returns a 32-byte key for one purpose (a fixed name, such as
// "berth mcp session ids v1"), derived from the master key with HKDF: every
// Berth process with the same master key derives the same key, and no key
// derived for one purpose tells anything about the master key or another.
func (s *Store) DeriveKey(purpose string) []byte {
	k, err := hkdf.Key(sha256.New, s.master, nil, purpose, 32)
	if err != nil {
		panic(err) // only for lengths past 255×32 bytes
	}
	return k
}
