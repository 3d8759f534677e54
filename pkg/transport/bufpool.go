package transport

import (
	"slices"
	"sync"
)

// bufferPool is a mem.BufferPool with a sync.Pool per size tier. Unlike
// gRPC's own pools it hands a buffer out as it was left, not zeroed: every
// user writes the length it asked for before reading it (a frame read in
// full, a message copied in), and the zeroing was a large part of the cost
// of moving data (a whole tier's capacity cleared per message).
type bufferPool struct {
	sizes []int // ascending
	pools []sync.Pool
}

func newBufferPool(sizes ...int) *bufferPool {
	sizes = slices.Sorted(slices.Values(sizes))
	return &bufferPool{sizes: sizes, pools: make([]sync.Pool, len(sizes))}
}

// Get returns a buffer of length n, from the smallest tier that holds it;
// one larger than every tier is allocated and never pooled.
func (p *bufferPool) Get(n int) *[]byte {
	i, _ := slices.BinarySearch(p.sizes, n)
	if i == len(p.sizes) {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.pools[i].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, p.sizes[i])
	return &b
}

// Put takes back a buffer Get gave; others are left to the collector.
func (p *bufferPool) Put(b *[]byte) {
	if i, ok := slices.BinarySearch(p.sizes, cap(*b)); ok {
		p.pools[i].Put(b)
	}
}
