package attest

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"
)

// ChainCache remembers cabundle chains that verified to a set of roots, so
// that later documents from the same host (which share the cabundle and
// differ only in the short-lived leaf) verify only the leaf's link. An entry
// records the cabundle's common validity window; a document outside it is
// verified from scratch. A ChainCache is safe for concurrent use.
type ChainCache struct {
	mu      sync.Mutex
	max     int
	entries map[cacheKey]*list.Element
	lru     *list.List // front = most recently used; values are *cacheEntry
	hits    uint64
	misses  uint64
}

type cacheKey [sha256.Size]byte

type cacheEntry struct {
	key                 cacheKey
	roots               *x509.CertPool
	certs               []*x509.Certificate
	notBefore, notAfter time.Time

	// leaves holds the SHA-256 of signing certificates already checked
	// against certs[len-1]: a host's leaf lives for hours and signs every
	// document of that time. Guarded by ChainCache.mu.
	leaves map[cacheKey]struct{}
}

const maxLeaves = 32

// leafKnown reports whether the leaf with hash h was verified under e.
func (c *ChainCache) leafKnown(e *cacheEntry, h cacheKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := e.leaves[h]
	return ok
}

// addLeaf records that the leaf with hash h verified under e.
func (c *ChainCache) addLeaf(e *cacheEntry, h cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.leaves == nil || len(e.leaves) >= maxLeaves {
		e.leaves = make(map[cacheKey]struct{})
	}
	e.leaves[h] = struct{}{}
}

var defaultChainCache = NewChainCache(256)

// NewChainCache returns a cache holding up to size chains (at least 1).
func NewChainCache(size int) *ChainCache {
	if size < 1 {
		size = 1
	}
	return &ChainCache{max: size, entries: make(map[cacheKey]*list.Element), lru: list.New()}
}

// Len returns the number of cached chains.
func (c *ChainCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Stats returns the number of lookups that hit and missed.
func (c *ChainCache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

// Purge empties the cache.
func (c *ChainCache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.lru.Init()
}

func (c *ChainCache) get(k cacheKey, roots *x509.CertPool) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok || el.Value.(*cacheEntry).roots != roots {
		c.misses++
		return nil
	}
	c.hits++
	c.lru.MoveToFront(el)
	return el.Value.(*cacheEntry)
}

func (c *ChainCache) put(k cacheKey, e *cacheEntry) {
	e.key = k
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[k] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).key)
	}
}

// bundleKey hashes the cabundle DERs, each length-prefixed.
func bundleKey(certs []*x509.Certificate) cacheKey {
	h := sha256.New()
	var n [8]byte
	for _, c := range certs {
		binary.BigEndian.PutUint64(n[:], uint64(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k cacheKey
	h.Sum(k[:0])
	return k
}

func newCacheEntry(roots *x509.CertPool, certs []*x509.Certificate) *cacheEntry {
	e := &cacheEntry{roots: roots, certs: append([]*x509.Certificate(nil), certs...), notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter}
	for _, c := range certs[1:] {
		if c.NotBefore.After(e.notBefore) {
			e.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(e.notAfter) {
			e.notAfter = c.NotAfter
		}
	}
	return e
}

// cacheable reports whether skipping the cabundle on later verifications
// loses no check: name constraints on a CA would also apply to the leaf, so
// such chains are always verified in full.
func cacheable(certs []*x509.Certificate) bool {
	for _, c := range certs {
		if len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+
			len(c.ExcludedIPRanges)+len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+
			len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) > 0 || c.PermittedDNSDomainsCritical {
			return false
		}
	}
	return true
}
