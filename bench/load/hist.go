package load

import (
	"math/bits"
	"time"
)

// histogram counts latencies in log-linear buckets of microseconds: exact
// below 64µs, then 32 buckets per power of two (at most 3% apart), up to
// 2^45µs (about a year). Fixed memory, no allocation per sample.
type histogram struct {
	counts [64 + 40*32]uint64
	total  uint64
	max    time.Duration
}

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0) / time.Microsecond)
	if v < 64 {
		return int(v)
	}
	e := bits.Len64(v) - 6 // v>>e is in [32, 64)
	i := 64 + (e-1)*32 + int(v>>e) - 32
	return min(i, len(histogram{}.counts)-1)
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < 64 {
		return time.Duration(i) * time.Microsecond
	}
	e := (i-64)/32 + 1
	m := uint64((i-64)%32 + 32)
	lo := m << e
	width := uint64(1) << e
	return time.Duration(lo+width/2) * time.Microsecond
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// quantile is the latency below which a fraction q of the samples fall
// (to the bucket's precision); 0 without samples.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketValue(i), h.max)
		}
	}
	return h.max
}
