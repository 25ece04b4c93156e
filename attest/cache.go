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

	// leaves maps the SHA-256 of signing certificates already checked
	// against certs[len-1] to their parsed form: a host's leaf lives for
	// hours and signs every document of that time, so it is neither parsed
	// nor verified again. Guarded by ChainCache.mu.
	leaves map[cacheKey]*x509.Certificate
}

const maxLeaves = 32

// leafKnown reports whether leaf, whose DER hashes to h, was verified under
// e. It compares the DER too, so a parsed certificate handed out by
// cacheLookup.leaf is the one that was verified.
func (c *ChainCache) leafKnown(e *cacheEntry, h cacheKey, leaf *x509.Certificate) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	known, ok := e.leaves[h]
	return ok && (known == leaf || string(known.Raw) == string(leaf.Raw))
}

// addLeaf records that leaf, whose DER hashes to h, verified under e.
func (c *ChainCache) addLeaf(e *cacheEntry, h cacheKey, leaf *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.leaves == nil || len(e.leaves) >= maxLeaves {
		e.leaves = make(map[cacheKey]*x509.Certificate)
	}
	e.leaves[h] = leaf
}

// cacheLookup carries one Verify call's view of its ChainCache: the bundle
// key, computed once from the DER bytes while parsing, the entry it found
// (looked up once, so Stats counts one lookup per document), and the leaf's
// hash. With a nil cache it only carries the roots.
type cacheLookup struct {
	cache *ChainCache
	roots *x509.CertPool

	keyed    bool
	bkey     cacheKey
	looked   bool
	found    *cacheEntry
	leafSum  cacheKey
	leafDone bool
}

// bundle implements certSource: the cached parsed cabundle when these DERs
// verified before under the same roots.
func (l *cacheLookup) bundle(ders [][]byte) []*x509.Certificate {
	l.bkey, l.keyed = bundleKeyDER(ders), true
	e := l.entry(l.bkey)
	if e == nil {
		return nil
	}
	return append([]*x509.Certificate(nil), e.certs...)
}

// leaf implements certSource: the parsed leaf when this DER verified before
// under the cabundle entry that bundle found.
func (l *cacheLookup) leaf(der []byte) *x509.Certificate {
	l.leafSum, l.leafDone = cacheKey(sha256.Sum256(der)), true
	if l.found == nil {
		return nil
	}
	l.cache.mu.Lock()
	defer l.cache.mu.Unlock()
	if c, ok := l.found.leaves[l.leafSum]; ok && string(c.Raw) == string(der) {
		return c
	}
	return nil
}

// key returns the cabundle's cache key, from the parse when it ran.
func (l *cacheLookup) key(certs []*x509.Certificate) cacheKey {
	if !l.keyed {
		l.bkey, l.keyed = bundleKey(certs), true
	}
	return l.bkey
}

// entry looks the bundle up once per Verify call.
func (l *cacheLookup) entry(k cacheKey) *cacheEntry {
	if !l.looked {
		l.found, l.looked = l.cache.get(k, l.roots), true
	}
	return l.found
}

// leafHash returns the SHA-256 of the leaf's DER, from the parse when it ran.
func (l *cacheLookup) leafHash(c *x509.Certificate) cacheKey {
	if !l.leafDone {
		l.leafSum, l.leafDone = cacheKey(sha256.Sum256(c.Raw)), true
	}
	return l.leafSum
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
	ders := make([][]byte, len(certs))
	for i, c := range certs {
		ders[i] = c.Raw
	}
	return bundleKeyDER(ders)
}

// bundleKeyDER hashes DERs, each length-prefixed: the key of a cabundle
// before (or without) parsing it.
func bundleKeyDER(ders [][]byte) cacheKey {
	h := sha256.New()
	var n [8]byte
	for _, der := range ders {
		binary.BigEndian.PutUint64(n[:], uint64(len(der)))
		h.Write(n[:])
		h.Write(der)
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
